"""Signals between real processes: waiting, sending, graceful shutdown, terminate."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import ipcwire
from ipcwire.errors import ChannelClosed, ConfigurationError, LocalProtocolError, Timeout
from ipcwire.signals import SignalSender, SignalWaiter, parse_signal, send_signal, terminate
from ipcwire.signals.aio import AioSignalWaiter
from ipcwire.signals.aio import graceful_shutdown as agraceful_shutdown
from ipcwire.signals.aio import terminate as aterminate

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}


def child(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        _, err = proc.communicate(timeout=20)
        raise AssertionError(f"child exited ({proc.returncode}) before it was ready: {err}")
    return line


def test_signal_names() -> None:
    for name in ("TERM", "SIGTERM", "sigterm", "15", 15, signal.SIGTERM):
        assert parse_signal(name) is signal.SIGTERM
    with pytest.raises(ConfigurationError, match="unknown signal"):
        parse_signal("NOPE")
    with pytest.raises(ConfigurationError):
        send_signal(0, "TERM")
    with pytest.raises(ipcwire.ChannelBroken, match="no such process"):
        dead = subprocess.Popen(["true"])
        dead.wait()
        send_signal(dead, "USR1")


def test_waiter_receives_a_signal_from_another_process() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with SignalWaiter(["USR1", "USR2"]) as waiter:
        sender = subprocess.run(
            [sys.executable, "-c", f"import os, signal; os.kill({os.getpid()}, signal.SIGUSR2)"],
            check=True,
        )
        assert sender.returncode == 0
        assert waiter.recv(timeout=10) is signal.SIGUSR2
        with pytest.raises(Timeout):
            waiter.recv(timeout=0)
        with pytest.raises(LocalProtocolError):
            waiter.send("x")
        assert waiter.statistics().messages_received == 1
    assert signal.getsignal(signal.SIGUSR1) == before  # restored


def test_waiting_from_a_thread_and_close_wakes_it() -> None:
    waiter = SignalWaiter(["USR1"])
    got: list[object] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            got.append(waiter.recv(timeout=30))
        except ChannelClosed as exc:
            got.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    started.wait()
    os.kill(os.getpid(), signal.SIGUSR1)
    t.join(10)
    assert got == [signal.SIGUSR1]
    t = threading.Thread(target=wait)
    t.start()
    started.wait()
    waiter.close()
    t.join(10)
    assert not t.is_alive()
    assert isinstance(got[-1], ChannelClosed)


def test_handlers_only_from_the_main_thread() -> None:
    errors: list[BaseException] = []

    def make() -> None:
        try:
            SignalWaiter(["USR1"])
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    assert isinstance(errors[0], ConfigurationError)
    with pytest.raises(ConfigurationError, match="cannot be caught"):
        SignalWaiter(["KILL"])


def test_signal_urls() -> None:
    with ipcwire.listen("signal:USR2") as listener, listener.accept(timeout=1) as incoming:
        with ipcwire.connect(f"signal:{os.getpid()}") as out:
            assert isinstance(out, SignalSender)
            out.send("USR2")
            assert incoming.recv(timeout=10) is signal.SIGUSR2
            with pytest.raises(LocalProtocolError):
                out.recv(timeout=0)
        with pytest.raises(Timeout):
            listener.accept(timeout=0.01)


def test_closing_a_waiter_from_another_thread_never_swallows_sigterm() -> None:
    proc = child(
        """
        import os, signal, threading
        from ipcwire.signals import SignalWaiter
        w = SignalWaiter(["TERM"])
        t = threading.Thread(target=w.close)
        t.start(); t.join()
        print("ready", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(30)
        print("still alive", flush=True)
        """
    )
    assert ready(proc) == "ready"
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGTERM, (out, err)


SERVICE = """
    import os, sys, time, ipcwire
    sock, marker, pidfile, code = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    open(pidfile, "w").write(str(os.getpid()))
    server = ipcwire.listen("unix://" + sock)

    def cleanup():
        with open(marker, "a") as f:
            f.write("x")
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while shutting down: ignored

    import signal
    shutdown = ipcwire.graceful_shutdown(server, cleanup, pidfile, exit_code=code)
    try:
        print("ready", flush=True)
        MAIN
    finally:
        print("finally ran", flush=True)
"""


@pytest.mark.parametrize(
    ("main", "code"),
    [
        ("server.serve(lambda ch: None)", 0),  # blocked in our listener
        ("threading.Event().wait(60)", 3),  # blocked in something else entirely
    ],
)
def test_graceful_shutdown_with_real_sigterm(main: str, code: int, tmp_path: Path) -> None:
    sock, marker, pidfile = tmp_path / "s.sock", tmp_path / "marker", tmp_path / "svc.pid"
    src = textwrap.dedent(SERVICE).replace("MAIN", "import threading; " + main)
    proc = subprocess.Popen(
        [sys.executable, "-c", src, str(sock), str(marker), str(pidfile), str(code)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert ready(proc) == "ready"
    assert sock.exists()
    assert pidfile.exists()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "finally ran" in out
    assert marker.read_text() == "x"  # cleanup ran exactly once
    assert not sock.exists()  # no stale socket file
    assert not pidfile.exists()  # registered paths removed
    with pytest.raises(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)  # reaped: no zombie


def test_graceful_shutdown_as_context_manager_without_signal(tmp_path: Path) -> None:
    calls: list[str] = []
    path = tmp_path / "f"
    path.write_text("")
    with ipcwire.graceful_shutdown(lambda: calls.append("a"), path, signals=["USR1"]) as s:
        assert not s.requested
    assert calls == ["a"]
    assert not path.exists()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_terminate_obedient_stubborn_and_foreign() -> None:
    obedient = child("import threading; print('ready', flush=True); threading.Event().wait()")
    assert ready(obedient) == "ready"
    assert terminate(obedient, timeout=5) == -signal.SIGTERM
    stubborn = child(
        """
        import signal, threading
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        threading.Event().wait()
        """
    )
    assert ready(stubborn) == "ready"
    assert terminate(stubborn.pid, timeout=0.3) == -signal.SIGKILL  # a bare pid: reaped too
    with pytest.raises(ChildProcessError):
        os.waitpid(stubborn.pid, os.WNOHANG)
    stubborn.wait()
    # a grandchild is not our child: stopped, but its status belongs to its parent
    holder = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    grandchild = int(holder.stdout.readline())
    assert terminate(grandchild, timeout=5) is None
    holder.wait(10)
    assert terminate(holder, timeout=1) == 0  # already exited: not an error


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_terminate_leaves_a_multiprocessing_process_knowing_its_exit(api: str) -> None:
    # terminate() reaped a multiprocessing.Process with waitpid behind multiprocessing's back:
    # the Process then said is_alive() and exitcode None for ever, stayed in
    # active_children(), and its own terminate()/kill() would signal the freed pid.
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=threading.Event().wait)
    proc.start()
    if api == "blocking":
        status = terminate(proc, timeout=5)
    else:
        status = asyncio.run(aterminate(proc, timeout=5))
    assert status == -signal.SIGTERM
    assert proc.exitcode == -signal.SIGTERM
    assert not proc.is_alive()
    assert proc not in multiprocessing.active_children()
    assert terminate(proc, timeout=1) == -signal.SIGTERM  # again: known, nothing signalled


def test_terminate_group_and_spawn_channel() -> None:
    ch = ipcwire.spawn(["sh", "-c", 'sleep 60 & echo "{\\"g\\": $!}"; wait'])
    grandchild = ch.recv(timeout=10)["g"]
    status = terminate(ch, timeout=5, group=True)
    assert status == -signal.SIGTERM
    assert not Path(f"/proc/{grandchild}").exists() or (
        Path(f"/proc/{grandchild}/stat").read_text().split(")")[1].split()[0] == "Z"
    )


def test_asyncio_waiter_and_terminate() -> None:
    async def main() -> None:
        waiter = AioSignalWaiter(["USR1"])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"import os, signal; os.kill({os.getpid()}, signal.SIGUSR1)"
        )
        assert await waiter.recv(timeout=10) is signal.SIGUSR1
        await proc.wait()
        waiter.close()
        stubborn = subprocess.Popen(
            [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGTERM, "
             "signal.SIG_IGN); print('ready', flush=True); sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert stubborn.stdout is not None
        assert stubborn.stdout.readline().strip() == "ready"
        assert await aterminate(stubborn, timeout=0.3) == -signal.SIGKILL

    asyncio.run(main())


def test_asyncio_graceful_shutdown_in_a_child(tmp_path: Path) -> None:
    sock = tmp_path / "a.sock"
    proc = child(
        f"""
        import asyncio, ipcwire
        from ipcwire import aio
        from ipcwire.signals.aio import graceful_shutdown

        async def main():
            server = await aio.listen("unix://{sock}")
            graceful_shutdown(server, exit_code=5)
            print("ready", flush=True)
            try:
                await server.serve(lambda ch: asyncio.sleep(0))
                await asyncio.Event().wait()
            finally:
                print("finally ran", flush=True)

        asyncio.run(main())
        """
    )
    assert ready(proc) == "ready"
    assert sock.exists()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 5, err
    assert "finally ran" in out
    assert not sock.exists()


def test_a_blocking_waiter_does_not_deafen_an_asyncio_loop() -> None:
    # The loop owns the wakeup fd first; the dispatcher takes it and forwards every byte.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        got = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR2, got.set)
        try:
            with SignalWaiter(["USR1"]) as waiter:
                os.kill(os.getpid(), signal.SIGUSR2)
                await asyncio.wait_for(got.wait(), 10)
                os.kill(os.getpid(), signal.SIGUSR1)
                assert waiter.recv(timeout=10) is signal.SIGUSR1
        finally:
            loop.remove_signal_handler(signal.SIGUSR2)

    asyncio.run(main())


def test_a_waiter_works_with_descriptor_numbers_over_1023() -> None:
    """Its wake-up fd took select(), which refuses numbers over 1023 (ValueError) in a
    process with many files open."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        with SignalWaiter(["USR1"]) as waiter:
            with pytest.raises(Timeout):
                waiter.recv(timeout=0.01)
            os.kill(os.getpid(), signal.SIGUSR1)
            assert waiter.recv(timeout=10) is signal.SIGUSR1
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.filterwarnings("ignore:.*ipcwire now handles SIGUSR1:RuntimeWarning")
def test_asyncio_waiters_and_shutdown_share_a_signal_and_restore_its_handler() -> None:
    """Each AioSignalWaiter and graceful_shutdown replaced the loop's handler for its signals
    (only the newest heard them: a waiter on TERM deafened the graceful shutdown), and closing
    one removed the handler for all and left SIG_DFL (not the program's previous handler:
    SIGUSR1's default action then kills the process)."""
    heard: list[int] = []

    def mine(signum: int, frame: object) -> None:
        heard.append(signum)

    original = signal.signal(signal.SIGUSR1, mine)

    async def main() -> None:
        first = AioSignalWaiter(["USR1"])
        shutdown = agraceful_shutdown(signals=["USR1"], exit=False)
        second = AioSignalWaiter(["USR1"])
        os.kill(os.getpid(), signal.SIGUSR1)
        assert await first.recv(timeout=10) is signal.SIGUSR1
        assert await second.recv(timeout=10) is signal.SIGUSR1
        await shutdown.wait()  # it heard the signal too and ran
        second.close()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert await first.recv(timeout=10) is signal.SIGUSR1
        await first.aclose()
        assert signal.getsignal(signal.SIGUSR1) is mine

    try:
        asyncio.run(main())
        os.kill(os.getpid(), signal.SIGUSR1)  # the program's own handler has it again
        assert heard == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, original)


# Run as pid 2 of a pid namespace of its own (sh is its pid 1): the next pid is chosen there
# (its ns_last_pid), so no process outside the namespace has its pid chosen for it (the other
# pytest worker's neither), and none can take the freed pid first. Prints one word per check.
WAITED_FOR_THEN_REUSED = """
import asyncio, subprocess, sys
import ipcwire
from ipcwire.signals import send_signal, terminate
from ipcwire.signals.aio import terminate as aterminate

done = subprocess.Popen(["true"])
assert done.wait(10) == 0
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(done.pid - 1))
ready = "import threading; print('ready', flush=True); threading.Event().wait()"
other = subprocess.Popen(
    [sys.executable, "-c", ready],
    stdout=subprocess.PIPE,
    text=True,
)
try:
    assert other.pid == done.pid, f"the other process got pid {other.pid}, not {done.pid}"
    assert other.stdout.readline().strip() == "ready"
    try:
        send_signal(done, "TERM")
    except ipcwire.ChannelBroken as exc:
        print("refused" if "exited already" in str(exc) else repr(exc), flush=True)
    else:
        print("sent", flush=True)
    print(terminate(done, timeout=5), asyncio.run(aterminate(done, timeout=5)), flush=True)
    print("alive" if other.poll() is None else "killed", flush=True)  # the pid's new owner
finally:
    other.kill()
    other.communicate(timeout=20)
"""


def test_a_process_already_waited_for_is_not_signalled_through_its_reused_pid() -> None:
    """terminate() and send_signal() of a Popen that had been waited for signalled its pid
    again, which by then may be another process's: that one was killed."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to choose the next pid in a pid namespace")
    script = '"$0" -c "$1"; exit $?'
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script]
        + [sys.executable, WAITED_FOR_THEN_REUSED],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["refused", "0 0", "alive"], done.stderr


def test_two_tasks_receiving_from_one_asyncio_waiter_both_get_a_signal() -> None:
    """The waiter kept one future: a second task's recv() replaced the first's, which then
    slept through the signals queued for it until its timeout (the blocking waiter serves
    several threads)."""

    async def main() -> list[signal.Signals]:
        with_waiter = AioSignalWaiter(["USR1"])
        first = asyncio.create_task(with_waiter.recv(timeout=10))
        second = asyncio.create_task(with_waiter.recv(timeout=10))
        await asyncio.sleep(0)  # one loop turn: both tasks are waiting
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait([first, second], return_when=asyncio.FIRST_COMPLETED)
        os.kill(os.getpid(), signal.SIGUSR1)  # after the first was handled: not coalesced
        got = [await first, await second]
        await with_waiter.aclose()
        return got

    assert asyncio.run(main()) == [signal.SIGUSR1, signal.SIGUSR1]


def test_a_forked_child_is_not_bound_by_its_parents_waiters(tmp_path: Path) -> None:
    """A process with a graceful shutdown (or a waiter) forks a child (multiprocessing's
    default on Linux): the child inherited the handlers but not the dispatcher's thread, so
    it swallowed SIGTERM (Process.terminate() did nothing), and a child exiting normally ran
    the parent's cleanup at its exit (removing the parent's socket file)."""
    pidfile = tmp_path / "parent.pid"
    pidfile.write_text("the parent's")
    proc = child(
        f"""
        import multiprocessing, os, sys, threading
        import ipcwire
        from ipcwire.signals import SignalWaiter

        def work():
            threading.Event().wait()

        shutdown = ipcwire.graceful_shutdown({str(pidfile)!r}, exit=False)  # and atexit
        waiter = SignalWaiter(["USR1"])
        worker = multiprocessing.get_context("fork").Process(target=work)
        worker.start()
        worker.terminate()  # SIGTERM
        worker.join(20)
        print("worker", worker.exitcode, flush=True)
        if worker.exitcode is None:
            worker.kill()
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal exit: atexit handlers run in the child
        os.waitpid(pid, 0)
        print("pidfile", os.path.exists({str(pidfile)!r}), flush=True)
        waiter.close()
        shutdown.close()
        """
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split("\n")[:2] == [f"worker {-signal.SIGTERM}", "pidfile True"], (out, err)


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_graceful_shutdown_refuses_what_it_cannot_clean_up_on_both_apis(api: str) -> None:
    # The asyncio graceful_shutdown took anything: a bytes path, None or a number failed only
    # at shutdown, with a traceback ('bytes' object is not callable), and the file stayed.
    async def in_asyncio(*resources: object) -> None:
        gs = agraceful_shutdown(*resources, exit=False)
        await gs.aclose()

    async def add_in_asyncio(resource: object) -> None:
        gs = agraceful_shutdown(exit=False)
        try:
            gs.add(resource)
        finally:
            await gs.aclose()

    for bad in (b"/run/app.sock", None, 42):
        with pytest.raises(TypeError, match="cannot clean up"):
            if api == "blocking":
                ipcwire.graceful_shutdown(bad, exit=False).close()
            else:
                asyncio.run(in_asyncio(bad))
        with pytest.raises(TypeError, match="cannot clean up"):
            if api == "blocking":
                gs = ipcwire.graceful_shutdown(exit=False)
                try:
                    gs.add(bad)
                finally:
                    gs.close()
            else:
                asyncio.run(add_in_asyncio(bad))


def test_terminate_refuses_a_nan_timeout_before_sending_anything() -> None:
    """timeout=nan sent SIGTERM first and only then raised ConfigurationError (naming no
    endpoint): the child was signalled by a call that failed."""
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as proc:
        try:
            with pytest.raises(ConfigurationError) as err:
                terminate(proc, timeout=float("nan"))
            assert err.value.endpoint == f"signal:{proc.pid}"
            with pytest.raises(ConfigurationError):
                asyncio.run(aterminate(proc, timeout=float("nan")))
            assert proc.poll() is None  # still running: nothing was sent
        finally:
            proc.kill()


def test_paths_are_removed_after_the_closes_in_both_apis(tmp_path: Path) -> None:
    """asyncio removed the resources in reverse order, paths among them: a socket file
    registered after its listener was gone before the listener closed. The blocking shutdown
    removes the paths after every close, as asyncio now does."""
    path = tmp_path / "app.sock"
    seen: list[bool] = []

    def close_listener() -> None:
        seen.append(path.exists())

    path.touch()
    with ipcwire.graceful_shutdown(close_listener, path, exit=False):
        pass

    async def main() -> None:
        path.touch()
        gs = agraceful_shutdown(close_listener, path, exit=False)
        await gs.aclose()

    asyncio.run(main())
    assert seen == [True, True] and not path.exists()
