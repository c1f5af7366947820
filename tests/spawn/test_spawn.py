"""spawn() and stdio(), blocking: real children, real pipes, real signals."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    EndOfChannel,
    FrameTooLarge,
    PermissionDenied,
    Timeout,
)
from ipcwire.spawn import SpawnChannel, spawn
from ipcwire.spawn.aio import spawn as aspawn

from ._util import PY, alive, group, py, reaped, wait_dead

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}

ECHO_LINES = py(
    """
    import json, sys
    for line in sys.stdin:
        msg = json.loads(line)
        sys.stdout.write(json.dumps({"echo": msg}) + "\\n")
        sys.stdout.flush()
    """
)


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def assert_gone(ch: SpawnChannel) -> None:
    assert reaped(ch.pid), f"child {ch.pid} was not reaped"
    assert group(ch.pid) == [], f"processes left in the child's group: {group(ch.pid)}"


def test_plain_child_speaks_json_lines() -> None:
    with spawn(ECHO_LINES) as ch:
        assert ch.request({"n": 1}, timeout=10) == {"echo": {"n": 1}}
        ch.send_many([{"n": 2}, {"n": 3}])
        assert [ch.recv(timeout=10), ch.recv(timeout=10)] == [
            {"echo": {"n": 2}},
            {"echo": {"n": 3}},
        ]
        assert ch.peer is not None
        assert ch.peer.pid == ch.pid
    assert ch.returncode == 0
    assert_gone(ch)


def test_codec_ndjson_shorthand_env_and_cwd(tmp_path: Path) -> None:
    code = py(
        """
        import json, os, sys
        print(json.dumps({"cwd": os.getcwd(), "var": os.environ.get("IW_VAR")}), flush=True)
        """
    )
    with spawn(code, codec="ndjson", env={"IW_VAR": "x"}, cwd=tmp_path) as ch:
        assert ch.recv(timeout=10) == {"cwd": str(tmp_path), "var": "x"}


def test_stdio_moves_protocol_off_stdout() -> None:
    child = py(
        """
        import os, ipcwire
        ch = ipcwire.stdio()
        print("a stray print")
        os.system("echo from a sub-subprocess")
        msg = ch.recv(timeout=10)
        ch.send({"reply": msg})
        """
    )
    lines: list[str] = []
    with spawn(child, env=ENV, stderr=lines.append) as ch:
        ch.send({"q": 1})
        assert ch.recv(timeout=10) == {"reply": {"q": 1}}
        with pytest.raises(EndOfChannel, match="exited with code 0"):
            ch.recv(timeout=10)
    assert "a stray print" in lines
    assert "from a sub-subprocess" in lines


def test_notifications_before_a_reply_neither_block_the_child_nor_get_lost() -> None:
    """The MCP SDK's stdio server hung when a handler sent progress notifications before its
    result (python-sdk #1141: a write stream that took one message at a time). Here a child
    sends more notifications than its stdout pipe holds, then the reply, while the parent
    reads until the reply's id: all arrive, in order, and the child exits cleanly."""
    child = py(
        """
        import ipcwire
        ch = ipcwire.stdio()
        req = ch.recv(timeout=10)
        for i in range(3000):  # about 400 KB: six times a pipe's 64 KiB
            ch.send({"progress": i, "pad": "x" * 100})
        ch.send({"id": req["id"], "result": "done"})
        """
    )
    with spawn(child, env=ENV) as ch:
        ch.send({"id": 7, "method": "work"})
        progress = []
        while (msg := ch.recv(timeout=10)).get("id") != 7:
            progress.append(msg["progress"])
        assert msg == {"id": 7, "result": "done"}
        assert progress == list(range(3000))
        with pytest.raises(EndOfChannel, match="exited with code 0"):
            ch.recv(timeout=10)


def test_stdio_twice_is_refused() -> None:
    child = py(
        """
        import ipcwire
        ch = ipcwire.stdio()
        try:
            ipcwire.stdio()
        except ipcwire.LocalProtocolError as exc:
            ch.send({"refused": "already" in str(exc)})
        """
    )
    with spawn(child, env=ENV) as ch:
        assert ch.recv(timeout=10) == {"refused": True}


def test_100_mb_each_way_without_a_reader_thread() -> None:
    # The caller sends everything before receiving anything; cat echoes as it reads. Without
    # read-ahead in send, cat blocks on its full stdout and we block on its full stdin.
    chunk = os.urandom(1 << 20)
    with spawn(["cat"], framing="length", codec="bytes") as ch:
        start = time.monotonic()
        for _ in range(100):
            ch.send(chunk, timeout=30)
        digest = hashlib.sha256()
        for _ in range(100):
            got = ch.recv(timeout=30)
            assert len(got) == len(chunk)
            digest.update(got)
        assert digest.digest() == hashlib.sha256(chunk * 100).digest()
        assert time.monotonic() - start < 60


@pytest.mark.parametrize("sink", ["callback", "logger", "path", "stringio", "devnull"])
def test_stderr_is_always_drained(
    sink: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 1 MiB of stderr before the reply: an undrained pipe (64 KiB) would block the child.
    child = py(
        """
        import sys
        for i in range(1024):
            sys.stderr.write(f"line {i} " + "x" * 1000 + "\\n")
        sys.stderr.flush()
        print('{"done": true}', flush=True)
        """
    )
    lines: list[str] = []
    buf = io.StringIO()
    log = logging.getLogger("iw-test-child")
    target: object = {
        "callback": lines.append,
        "logger": log,
        "path": tmp_path / "err.log",
        "stringio": buf,
        "devnull": subprocess.DEVNULL,
    }[sink]
    with caplog.at_level(logging.INFO, logger="iw-test-child"), spawn(child, stderr=target) as ch:
        assert ch.recv(timeout=20) == {"done": True}
    if sink == "callback":
        assert len(lines) == 1024
        assert lines[-1].startswith("line 1023 ")
    elif sink == "logger":
        assert sum("line 1023" in r.getMessage() for r in caplog.records) == 1
    elif sink == "path":
        assert (tmp_path / "err.log").read_text().count("\n") == 1024
        assert (tmp_path / "err.log").stat().st_mode & 0o777 == 0o600
    elif sink == "stringio":
        assert buf.getvalue().count("\n") == 1024


def test_a_stderr_callback_may_close_the_channel(caplog: pytest.LogCaptureFixture) -> None:
    # The callback runs in the stderr thread; close() from there used to join that very
    # thread (RuntimeError, logged as a failed callback) and leak the thread's eventfd.
    before = _open_fds()
    ready = threading.Event()
    closed = threading.Event()
    box: list[SpawnChannel] = []

    def on_line(line: str) -> None:
        if "FATAL" in line and ready.wait(20):
            box[0].close()
            closed.set()

    child = ["sh", "-c", "read go; echo FATAL >&2; exec sleep 100"]
    with caplog.at_level(logging.ERROR, logger="ipcwire"):
        ch = spawn(child, stderr=on_line, exit_timeout=0.2, term_timeout=0.5)
        box.append(ch)
        ready.set()
        ch.send("go")
        assert closed.wait(20)
        pumps = [t for t in threading.enumerate() if t.name.startswith("ipcwire stderr")]
        for t in pumps:
            t.join(20)
            assert not t.is_alive()
    assert not [r for r in caplog.records if "stderr callback" in r.getMessage()]
    assert ch.closed
    assert_gone(ch)
    assert _open_fds() - before == set()


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_stderr_callback_that_raises_is_logged_once_not_once_per_line(
    api: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: every line logged a full traceback: a child writing 200,000 lines to a broken
    # callback put 73 MB of tracebacks on the parent's stderr and ran 100x slower (its
    # writes waited for the tracebacks; in asyncio the event loop formatted them).
    child = py(
        """
        import sys
        for i in range(3000):
            sys.stderr.write(f"line {i}\\n")
        sys.stderr.flush()
        print('{"done": true}', flush=True)
        """
    )
    calls: list[str] = []
    pids: list[int] = []

    def broken(line: str) -> None:
        calls.append(line)
        raise RuntimeError("the sink is broken")

    async def in_asyncio() -> None:
        ch = await aspawn(child, stderr=broken)
        pids.append(ch.pid)
        try:
            assert await ch.recv(timeout=20) == {"done": True}
        finally:
            await ch.aclose()

    with caplog.at_level(logging.INFO, logger="ipcwire"):
        if api == "blocking":
            with spawn(child, stderr=broken) as ch:
                pids.append(ch.pid)
                assert ch.recv(timeout=20) == {"done": True}
        else:
            asyncio.run(in_asyncio())
    assert len(calls) == 3000  # every line is still offered to it
    about = [r for r in caplog.records if "stderr callback" in r.getMessage()]
    assert len(about) == 2, [r.getMessage() for r in about[:3]]
    first, summary = about
    assert first.exc_info is not None and "the sink is broken" in str(first.exc_info[1])
    assert "2999 more times" in summary.getMessage()
    assert f"[pid {pids[0]}]" in first.getMessage()


def test_stderr_pipe_and_stdout_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="fill and block"):
        spawn(["true"], stderr=subprocess.PIPE)
    with pytest.raises(ConfigurationError, match="protocol stream"):
        spawn(["true"], stderr=subprocess.STDOUT)


def test_close_ladder_child_ignores_sigterm_and_eof() -> None:
    child = py(
        """
        import signal, threading
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('{"ready": true}', flush=True)
        threading.Event().wait()
        """
    )
    ch = spawn(child, exit_timeout=0.3, term_timeout=0.3)
    assert ch.recv(timeout=10) == {"ready": True}
    start = time.monotonic()
    ch.close()
    took = time.monotonic() - start
    assert took < 0.3 + 0.3 + 2.0 + 1.0
    assert took >= 0.5  # it did wait before each step
    assert ch.returncode == -signal.SIGKILL
    assert_gone(ch)


def test_close_drains_a_last_reply_so_the_child_exits_by_itself() -> None:
    # On stdin EOF the child writes 5 MB (far over the pipe) before exiting: close() reads
    # and discards it, so no SIGTERM is needed.
    child = py(
        "import sys; sys.stdin.read(); sys.stdout.write('x' * 5_000_000); sys.stdout.flush()"
    )
    ch = spawn(child, exit_timeout=10, term_timeout=1)
    start = time.monotonic()
    ch.close()
    assert time.monotonic() - start < 5
    assert ch.returncode == 0
    assert_gone(ch)


@pytest.mark.parametrize("wait", [1e7, float("inf")])
def test_close_with_an_exit_timeout_of_months_or_for_ever(wait: float) -> None:
    # poll() takes at most about 24 days (2**31 ms); a longer exit_timeout, or an infinite
    # one ("wait until it is done"), raised OverflowError from close() (with stdin closed).
    child = py("import sys; sys.stdin.read()")
    ch = spawn(child, exit_timeout=wait)
    ch.close()
    assert ch.returncode == 0
    assert_gone(ch)


def test_close_ladder_grandchild_holds_the_pipes() -> None:
    # The child exits on stdin EOF, but its background grandchild keeps stdout and stderr.
    child = ["sh", "-c", 'sleep 3600 & echo "{\\"grandchild\\": $!}"; read line; exit 0']
    ch = spawn(child, exit_timeout=0.5, term_timeout=0.5)
    grandchild = ch.recv(timeout=10)["grandchild"]
    assert alive(grandchild)
    start = time.monotonic()
    ch.close()
    assert time.monotonic() - start < 0.5 + 0.5 + 2.0 + 1.0
    assert ch.returncode == 0
    assert wait_dead(grandchild), "the grandchild survived close()"
    assert_gone(ch)


def test_recv_ends_when_child_exits_though_grandchild_holds_stdout() -> None:
    child = ["sh", "-c", 'sleep 3600 & echo "{\\"grandchild\\": $!}"; exit 0']
    with spawn(child, exit_timeout=0.2, term_timeout=0.5) as ch:
        grandchild = ch.recv(timeout=10)["grandchild"]
        start = time.monotonic()
        with pytest.raises(EndOfChannel, match="exited with code 0"):
            ch.recv(timeout=30)
        assert time.monotonic() - start < 5
        assert alive(grandchild)  # still holding the pipe: close() deals with it
    assert wait_dead(grandchild)
    assert_gone(ch)


@pytest.mark.parametrize(
    ("script", "framing", "match"),
    [
        ("printf '{\"partial\": tru'; exit 0", "ndjson", "exited with code 0"),
        ("printf '{\"partial\": tru'; kill -9 $$", "ndjson", "SIGKILL"),
        ("printf '\\000\\000\\000\\144ten bytes.'; exit 0", "length", "exited with code 0"),
    ],
)
def test_child_dies_mid_message(script: str, framing: str, match: str) -> None:
    with spawn(["sh", "-c", script], framing=framing, codec="bytes") as ch:
        with pytest.raises(ChannelBroken, match="middle of a message") as info:
            ch.recv(timeout=10)
        assert match in str(info.value)
        with pytest.raises(ChannelBroken):  # and it stays that way: never a partial message
            ch.recv(timeout=1)
    assert_gone(ch)


@pytest.mark.parametrize(
    ("script", "match"),
    [("exit 3", "exited with code 3"), ("kill -9 $$", r"killed by SIGKILL \(9\)")],
)
def test_failed_child_is_channel_broken_with_status(script: str, match: str) -> None:
    with spawn(["sh", "-c", 'echo "{}"; ' + script]) as ch:
        assert ch.recv(timeout=10) == {}
        with pytest.raises(ChannelBroken, match=match):
            ch.recv(timeout=10)
        with pytest.raises(ChannelBroken, match=match):  # sending to it says why, too
            for _ in range(100):
                ch.send({"x": "y" * 1000}, timeout=10)


def test_line_limit_is_explicit_and_recoverable() -> None:
    child = py(
        """
        import sys
        sys.stdout.write('"' + "x" * 200_000 + '"\\n')
        sys.stdout.write('{"after": true}\\n')
        sys.stdout.write('"' + "y" * 10_000_000 + '"\\n')
        sys.stdout.flush()
        """
    )
    with spawn(child, max_frame=100_000) as ch:
        with pytest.raises(FrameTooLarge) as info:
            ch.recv(timeout=10)
        assert info.value.limit == 100_000
        assert ch.recv(timeout=10) == {"after": True}
    with spawn(child) as ch:  # the default limit is large: no 64 KiB trap
        assert len(ch.recv(timeout=10)) == 200_000
        assert ch.recv(timeout=10) == {"after": True}
        assert len(ch.recv(timeout=10)) == 10_000_000


def test_token_handshake_with_an_ipcwire_child() -> None:
    child = py(
        """
        import ipcwire
        ch = ipcwire.stdio(token="s3cret", codec="msgpack", framing="length")
        ch.send({"got": ch.recv(timeout=10)})
        """
    )
    with spawn(child, env=ENV, token="s3cret", codec="msgpack", framing="length") as ch:
        ch.send(b"\x00raw")
        assert ch.recv(timeout=10) == {"got": b"\x00raw"}
    with pytest.raises(AuthenticationFailed):
        spawn(child, env=ENV, token="wrong", codec="msgpack", framing="length")


def test_token_against_a_plain_child_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises((AuthenticationFailed, Timeout)):
        spawn(["cat"], token="s3cret", handshake_timeout=2)
    assert time.monotonic() - start < 5


def test_program_not_found_or_not_executable(tmp_path: Path) -> None:
    with pytest.raises(ChannelBroken, match="not found"):
        spawn([str(tmp_path / "no-such-program")])
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionDenied, match="executable"):
        spawn([str(script)])
    with pytest.raises(ConfigurationError, match="list of arguments"):
        spawn("echo hi")


def test_a_start_that_fails_says_why_and_leaves_no_fd(tmp_path: Path) -> None:
    no_shebang = tmp_path / "agent.sh"
    no_shebang.write_text("echo hi\n")  # executable, but no #! line: ENOEXEC
    no_shebang.chmod(0o755)
    a_file = tmp_path / "file"
    a_file.write_text("")
    log = tmp_path / "child.log"
    before = _open_fds()
    with pytest.raises(ChannelBroken, match="#!"):
        spawn([str(no_shebang)], stderr=str(log))
    with pytest.raises(ChannelBroken, match="not a directory"):
        spawn(["true"], cwd=a_file, stderr=lambda line: None)
    with pytest.raises(ConfigurationError, match="pass_fds"):
        spawn(["true"], pass_fds=[max(before) + 100], stderr=str(log))
    with pytest.raises(ConfigurationError, match="list of arguments"):
        spawn([], stderr=str(log))
    with pytest.raises(TypeError):
        spawn(["true"], env={"A": 1}, stderr=str(log))  # type: ignore[arg-type]
    assert _open_fds() - before == set()


def test_close_wakes_a_blocked_sender() -> None:
    child = py("import threading; print('{}', flush=True); threading.Event().wait()")
    ch = spawn(child, codec="bytes", exit_timeout=0.1, term_timeout=0.5)
    assert ch.recv(timeout=10) == b"{}"
    errors: list[BaseException] = []
    started = threading.Event()

    def sender() -> None:
        started.set()
        try:
            ch.send(b"x" * (16 << 20))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=sender)
    t.start()
    started.wait()
    ch.close()
    t.join(10)
    assert not t.is_alive()
    assert errors
    assert isinstance(errors[0], ChannelClosed)
    assert_gone(ch)


def test_send_timeout_on_a_child_that_does_not_read() -> None:
    child = py("import threading; print('{}', flush=True); threading.Event().wait()")
    with spawn(child, codec="bytes", exit_timeout=0.1) as ch:
        assert ch.recv(timeout=10) == b"{}"
        with pytest.raises(Timeout, match="timed out after"):
            ch.send(b"x" * (16 << 20), timeout=0.2)
        with pytest.raises(ChannelBroken, match="out of step"):
            ch.send(b"more", timeout=0.2)


def test_send_signal_to_the_child() -> None:
    child = py(
        """
        import signal, ipcwire
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        ch = ipcwire.stdio()
        ch.send({"ready": True})
        got = signal.sigwait({signal.SIGUSR1})
        ch.send({"got": signal.Signals(got).name})
        """
    )
    with spawn(child, env=ENV) as ch:
        assert ch.recv(timeout=10) == {"ready": True}
        ch.send_signal("USR1")
        assert ch.recv(timeout=10) == {"got": "SIGUSR1"}


GRANDCHILD_LEFT = """
    import subprocess, sys, ipcwire
    g = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ipcwire.stdio().send({"grandchild": g.pid})
    """


def test_send_signal_to_the_group_after_the_child_exited() -> None:
    # The child exited, leaving a grandchild in its process group: group=True still reaches
    # it (the group's id cannot be reused while the group has members). It did nothing.
    import asyncio

    from ipcwire import aio

    with spawn(py(GRANDCHILD_LEFT), env=ENV) as ch:
        grandchild = ch.recv(timeout=10)["grandchild"]
        try:
            assert ch.wait(timeout=10) == 0
            assert alive(grandchild)
            ch.send_signal("TERM", group=True)
            assert wait_dead(grandchild, 10), "the signal did not reach the group"
            ch.send_signal("TERM", group=True)  # an empty group: nothing to do, no error
            ch.send_signal("TERM")  # the child is gone: nothing to do, as subprocess
        finally:
            if alive(grandchild):
                os.kill(grandchild, signal.SIGKILL)

    async def main() -> None:
        async with await aio.spawn(py(GRANDCHILD_LEFT), env=ENV) as ach:
            pid = (await ach.recv(timeout=10))["grandchild"]
            try:
                assert await ach.wait(timeout=10) == 0
                ach.send_signal("TERM", group=True)
                assert wait_dead(pid, 10), "the signal did not reach the group"
            finally:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)

    asyncio.run(main())


STRANGER = """
import os, signal, sys
os.setsid()  # a group of its own, whose number is this (reused) pid
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # a SIGTERM stays pending
print("ready", flush=True)
sys.stdin.read()
"""

# Run as pid 2 of a pid namespace of its own (sh is its pid 1): the next pid is chosen there
# (its ns_last_pid), so no process outside the namespace has its pid chosen for it (the other
# pytest worker's neither), and none can take the freed pid first. Prints what the stranger
# got: "signalled" or "spared".
GROUP_OF_A_REUSED_PID = """
import signal, subprocess, sys
from pathlib import Path
from ipcwire.spawn import spawn

def pending(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return int(line.split()[1], 16)
    raise AssertionError("no ShdPnd in /proc status")

ch = spawn([sys.executable, "-c", "import ipcwire; ipcwire.stdio().send({'bye': 1})"])
try:
    assert ch.recv(timeout=10) == {"bye": 1}
    assert ch.wait(timeout=10) == 0
finally:
    ch.close()  # reaped: the pid is free
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(ch.pid - 1))
stranger = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
)
try:
    assert stranger.pid == ch.pid, f"the stranger got pid {stranger.pid}, not {ch.pid}"
    assert stranger.stdout.readline().strip() == "ready"
    ch.send_signal("TERM", group=True)
    got = pending(stranger.pid) & (1 << (signal.SIGTERM - 1))
    print("signalled" if got else "spared", flush=True)
finally:
    stranger.kill()
    stranger.communicate(timeout=20)
"""


def test_send_signal_to_the_group_of_an_exited_child_spares_a_process_with_its_pid() -> None:
    """The child exited and was reaped; another process took its pid and leads a group of
    its own with that number (setsid). send_signal(group=True) signalled that group."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to choose the next pid in a pid namespace")
    script = '"$0" -c "$1" "$2"; exit $?'
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script]
        + [PY, GROUP_OF_A_REUSED_PID, STRANGER],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "spared"), done.stderr


def test_child_exits_when_its_parent_dies() -> None:
    # parent (killed with -9) -> child with stdio(exit_on_parent_death=True), which does not
    # read its stdin, so only the parent-death watch can tell it.
    inner = (
        "import threading, ipcwire\n"
        "ch = ipcwire.stdio(exit_on_parent_death=True)\n"
        "ch.send({'up': True})\n"
        "threading.Event().wait()\n"
    )
    parent_code = f"""
        import os, sys, threading, ipcwire
        ch = ipcwire.spawn([sys.executable, "-c", {inner!r}])
        assert ch.recv(timeout=20) == {{"up": True}}
        print(ch.pid, flush=True)
        threading.Event().wait()
        """
    parent = subprocess.Popen(py(parent_code), env=ENV, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    try:
        assert alive(child_pid)
        parent.kill()
        parent.wait(10)
        assert wait_dead(child_pid, 10), "the child outlived its parent"
    finally:
        if alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_the_childs_own_subprocesses_end_with_it_when_its_parent_dies() -> None:
    """parent (killed with -9) -> child with exit_on_parent_death=True -> its own subprocess
    (in the child's process group). Only the child got SIGTERM: the subprocess was left
    running, reparented to init (found by a newcomer walkthrough). The whole group spawn()
    made gets it now, as from the parent's shutdown ladder."""
    inner = (
        "import subprocess, threading, ipcwire\n"
        "ch = ipcwire.stdio(exit_on_parent_death=True)\n"
        "sub = subprocess.Popen(['sleep', '300'])\n"
        "ch.send({'sub': sub.pid})\n"
        "threading.Event().wait()\n"
    )
    parent_code = f"""
        import sys, threading, ipcwire
        ch = ipcwire.spawn([sys.executable, "-c", {inner!r}])
        print(ch.recv(timeout=20)["sub"], ch.pid, flush=True)
        threading.Event().wait()
        """
    parent = subprocess.Popen(py(parent_code), env=ENV, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    sub, child_pid = map(int, parent.stdout.readline().split())
    try:
        assert alive(sub) and alive(child_pid)
        parent.kill()
        parent.wait(10)
        assert wait_dead(child_pid, 10), "the child outlived its parent"
        assert wait_dead(sub, 10), "the child's subprocess outlived it"
    finally:
        for pid in (sub, child_pid):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_exit_on_parent_death_through_a_wrapper_that_forks() -> None:
    # parent -> wrapper (a launcher that starts the agent as its child and waits: uv run,
    # poetry run, a shell script without exec) -> agent with exit_on_parent_death=True. The
    # agent's own parent is the wrapper, not the spawn()ing process: it must still work, and
    # still end the agent once the spawn()ing process dies.
    inner = (
        "import os, threading, ipcwire\n"
        "ch = ipcwire.stdio(exit_on_parent_death=True)\n"
        "ch.send({'pid': os.getpid(), 'got': ch.recv(timeout=20)})\n"
        "threading.Event().wait()\n"
    )
    wrapper = (
        f"import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', {inner!r}]))"
    )
    parent_code = f"""
        import sys, threading, ipcwire
        ch = ipcwire.spawn([sys.executable, "-c", {wrapper!r}])
        reply = ch.request("ping", timeout=20)
        assert reply["got"] == "ping", reply
        print(reply["pid"], flush=True)
        threading.Event().wait()
        """
    parent = subprocess.Popen(
        py(parent_code), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None and parent.stderr is not None
    line = parent.stdout.readline()
    try:
        # before: the agent saw a parent (the wrapper) other than the one spawn() named, took
        # it for dead, and SIGTERMed itself at once: the request ended with EndOfChannel
        assert line.strip().isdigit(), parent.stderr.read() if parent.poll() is not None else line
        agent = int(line)
        assert alive(agent)
        parent.kill()
        parent.wait(10)
        assert wait_dead(agent, 10), "the agent outlived the process that spawned it"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if line.strip().isdigit() and alive(int(line)):
            os.kill(int(line), signal.SIGKILL)


def test_children_never_closed_are_shut_down_at_exit() -> None:
    parent_code = """
        import sys, ipcwire
        ch = ipcwire.spawn(["sh", "-c", "echo '{}'; exec sleep 3600"])
        ch.recv(timeout=20)
        print(ch.pid, flush=True)
        # exits without closing the channel
        """
    out = subprocess.run(
        py(parent_code), env=ENV, capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    child_pid = int(out.stdout)
    assert wait_dead(child_pid, 10)
    assert group(child_pid) == []


def test_python_interpreter_is_usable_as_child() -> None:
    # sanity: the interpreter the tests use is the one children use
    assert os.path.exists(PY)
    assert sys.executable == PY


def test_a_message_over_the_limit_names_the_child_by_pid_on_both_drivers() -> None:
    """The asyncio driver's errors named the child as ``spawn:<argv> [pid N]``; the blocking
    driver's FrameTooLarge said only ``spawn:<argv>``: which of several children was it?"""
    import asyncio

    from ipcwire import aio

    with spawn(ECHO_LINES, max_frame=100) as ch:
        with pytest.raises(FrameTooLarge, match=rf"\[pid {ch.pid}\]"):
            ch.send({"x": "y" * 200})
        assert ch.request({"still": "usable"}, timeout=10) == {"echo": {"still": "usable"}}

    async def main() -> None:
        async with await aio.spawn(ECHO_LINES, max_frame=100) as ach:
            with pytest.raises(FrameTooLarge, match=rf"\[pid {ach.pid}\]"):
                await ach.send({"x": "y" * 200})

    asyncio.run(asyncio.wait_for(main(), 60))
