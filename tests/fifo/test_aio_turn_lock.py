"""asyncio fifo writer: the shared flock kept for the event loop's turn (``hold_lock=True``).

With it, ``AioFifoChannel`` takes the FIFO's shared flock at the first short send of a turn
and lets it go once its task yields (a callback the loop runs then), so a burst of short
messages costs one ``write`` each instead of flock + write + unlock. These tests pin that, and
what must stay
true with it: a long message of another process is delivered whole and is not starved while
this channel streams (it posts a notice, ``ipcwire.fifo._notice``, which the channel looks for
every ``LOOK_EVERY`` messages), the channel's own long message in the middle of a burst, a
close (also with a copy of the fd alive elsewhere, as a forked child's), a fork, and a channel
whose loop does not run. Real processes where another writer matters; waits are bounded
polls, never sleeps standing in for synchronisation."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests._aio_listeners import until
from tests._loops import AioRun
from tests._proc import wait_until

import ipcwire
import ipcwire.fifo.aio as fifo_aio
from ipcwire import aio
from ipcwire.fifo import _notice as notice

BOUND = 20.0
LONG = bytes(range(256)) * 256  # 64 KiB: over PIPE_BUF, so under the exclusive flock

pytestmark = pytest.mark.skipif(not notice.AVAILABLE, reason="holds across turns: Linux only")

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}


def _free(probe: int) -> bool:
    """Whether another open file of the FIFO (``probe``, a write end) can lock it exclusively
    now, i.e. nobody holds its flock."""
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(probe, fcntl.LOCK_UN)
    return True


class _CountingFcntl:
    """``fcntl`` for ``ipcwire.fifo.aio``, counting its flock calls."""

    def __init__(self) -> None:
        self.flocks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(fcntl, name)

    def flock(self, fd: int, how: int) -> None:
        self.flocks += 1
        fcntl.flock(fd, how)


def test_a_burst_takes_the_lock_once_and_lets_it_go_when_the_task_yields(
    tmp_path: Path, aio_run: AioRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.fifo"
    url = f"fifo://{path}"

    async def main() -> None:
        async with await aio.listen(url, codec="bytes") as listener:
            w = await aio.connect(url, codec="bytes", hold_lock=True)
            reader = await listener.accept(timeout=10)
            probe = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                counting = _CountingFcntl()
                monkeypatch.setattr(fifo_aio, "fcntl", counting)
                for i in range(100):
                    await w.send(b"m%d" % i)
                in_turn = counting.flocks
                held = not _free(probe)
                assert await until(lambda: _free(probe), BOUND)  # the task yielded
                monkeypatch.setattr(fifo_aio, "fcntl", fcntl)
                assert (in_turn, held) == (1, True)  # (before: 200 calls, and not held)
                for i in range(100):
                    assert await reader.recv(timeout=10) == b"m%d" % i
            finally:
                os.close(probe)
            await w.aclose()
            await reader.aclose()

    aio_run(main())


def test_where_no_notice_can_be_seen_the_lock_is_taken_per_message(
    tmp_path: Path, aio_run: AioRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (OFD locks refused: a file system without them) A long writer could not be seen, so
    # no lock is kept across the turn: per message, as before the holds.
    path = tmp_path / "p.fifo"
    url = f"fifo://{path}"
    monkeypatch.setattr(notice, "posted", lambda fd: None)

    async def main() -> None:
        async with await aio.listen(url, codec="bytes") as listener:
            w = await aio.connect(url, codec="bytes", hold_lock=True)
            reader = await listener.accept(timeout=10)
            probe = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                counting = _CountingFcntl()
                monkeypatch.setattr(fifo_aio, "fcntl", counting)
                for i in range(10):
                    await w.send(b"m%d" % i)
                    assert _free(probe)
                monkeypatch.setattr(fifo_aio, "fcntl", fcntl)
                assert counting.flocks == 20
            finally:
                os.close(probe)
            for i in range(10):
                assert await reader.recv(timeout=10) == b"m%d" % i
            await w.aclose()
            await reader.aclose()

    aio_run(main())


# Streams 60-byte messages in a loop that never yields while the FIFO has room, until killed.
STREAMER = """
import asyncio, sys
from ipcwire import aio

async def main():
    ch = await aio.connect(sys.argv[1], codec="bytes", timeout=20, hold_lock=True)
    print("connected", flush=True)
    msg = b"s" * 60
    while True:
        await ch.send(msg)
        sum(range(300))  # (work between messages: the reader keeps up, the FIFO has room)

asyncio.run(main())
"""

# Connects with the blocking API, sends one 64 KiB message when told to, says how long it
# took (or dies with the Timeout that says another writer held the FIFO).
LONG_WRITER = """
import sys, time, ipcwire
ch = ipcwire.connect(sys.argv[1], codec="bytes", timeout=20)
print("connected", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
ch.send(bytes(range(256)) * 256, timeout=float(sys.argv[2]))
print(f"sent {time.monotonic() - t0:.3f}", flush=True)
ch.close()
"""


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "connected"
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(20)
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


def test_a_long_message_of_another_process_is_not_starved_by_a_streaming_channel(
    tmp_path: Path,
) -> None:
    # The streamer never yields, so it would keep its shared lock for good: the long writer
    # (blocking API, polling for the exclusive lock, giving up after 5 s) gets in only
    # because the streamer looks for its notice every LOOK_EVERY messages and then locks per
    # message while it stands (measured here: the send takes 1-2 ms; without the look it
    # timed out in 4 runs of 4). The streamer works a little between messages, so the reader
    # keeps up and the FIFO never fills: a send waiting for room would yield.
    url = f"fifo://{tmp_path}/s.fifo"
    short = b"s" * 60
    with ipcwire.listen(url, codec="bytes") as listener:
        streamer = _spawn(STREAMER, url)
        writer = _spawn(LONG_WRITER, url, "5")
        try:
            with listener.accept(timeout=10) as rx:
                for _ in range(2000):  # it streams
                    assert rx.recv(timeout=10) == short
                assert writer.stdin is not None and writer.stdout is not None
                writer.stdin.write("go\n")
                writer.stdin.flush()
                meanwhile = 0
                deadline = time.monotonic() + 30  # (a bound on this loop, not a timing)
                while time.monotonic() < deadline:
                    m = rx.recv(timeout=10)
                    if m != short:
                        break
                    meanwhile += 1
                    if meanwhile % 10_000 == 0 and writer.poll():
                        pytest.fail(f"the long writer gave up, {meanwhile} short messages came")
                else:
                    pytest.fail(f"no long message within 30 s, {meanwhile} short ones came")
                assert m == LONG  # whole: no short message landed inside it
                assert writer.stdout.readline().startswith("sent ")
                assert meanwhile > 0  # the streamer did stream while the long writer waited
                for _ in range(2000):  # and goes on, in step
                    assert rx.recv(timeout=10) == short
        finally:
            _end(streamer)
            _end(writer)


def test_a_long_send_of_the_channel_in_the_middle_of_a_burst(
    tmp_path: Path, aio_run: AioRun
) -> None:
    # The shared lock held for the turn goes before the long message takes the lock
    # exclusively through the same open file (a conversion: its unlock would have dropped the
    # turn's lock too); the short messages after it take the lock again, for real.
    path = tmp_path / "c.fifo"
    url = f"fifo://{path}"

    async def main() -> None:
        async with await aio.listen(url, codec="bytes") as listener:
            w = await aio.connect(url, codec="bytes", hold_lock=True)
            reader = await listener.accept(timeout=10)
            probe = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                for i in range(10):
                    await w.send(b"a%d" % i)
                assert not _free(probe)
                await w.send(LONG)
                for i in range(10):
                    await w.send(b"b%d" % i)
                assert not _free(probe)  # held again in this turn
                assert await until(lambda: _free(probe), BOUND)
            finally:
                os.close(probe)
            expected = [b"a%d" % i for i in range(10)] + [LONG] + [b"b%d" % i for i in range(10)]
            for m in expected:
                assert await reader.recv(timeout=10) == m
            await w.aclose()
            await reader.aclose()

    aio_run(main())


@pytest.mark.parametrize("how", ["close", "transport abort"])
def test_the_lock_goes_with_the_write_end_even_while_a_copy_of_it_lives(
    tmp_path: Path, aio_run: AioRun, how: str
) -> None:
    # A copy of the fd (a forked child's, say) keeps the open file, so its flock, alive past
    # the channel's close: the channel unlocks before its write end goes.
    path = tmp_path / "d.fifo"
    url = f"fifo://{path}"

    async def main() -> None:
        async with await aio.listen(url, codec="bytes") as listener:
            w = await aio.connect(url, codec="bytes", hold_lock=True)
            reader = await listener.accept(timeout=10)
            probe = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            t: Any = w._transport  # type: ignore[attr-defined]
            copy = os.dup(t.get_extra_info("pipe_fds")[1])
            try:
                await w.send(b"x")
                assert not _free(probe)
                if how == "close":
                    w.close()
                else:
                    t.abort()
                assert _free(probe)  # at once, in this turn
            finally:
                os.close(copy)
                os.close(probe)
            assert await reader.recv(timeout=10) == b"x"
            await w.aclose()
            await reader.aclose()

    aio_run(main())


def test_a_forked_copy_holds_nothing_and_leaves_the_parents_lock(
    tmp_path: Path, aio_run: AioRun
) -> None:
    path = tmp_path / "f.fifo"
    url = f"fifo://{path}"

    async def main() -> None:
        async with await aio.listen(url, codec="bytes") as listener:
            w = await aio.connect(url, codec="bytes", hold_lock=True)
            reader = await listener.accept(timeout=10)
            probe = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                await w.send(b"x")  # held for this turn
                pid = os.fork()
                if pid == 0:  # the copy: neither holds nor will hold across turns
                    state = (w._held, w._release_due, w._hold_turns)  # type: ignore[attr-defined]
                    os._exit(0 if state == (False, False, False) else 1)
                _, status = os.waitpid(pid, 0)
                assert os.waitstatus_to_exitcode(status) == 0
                assert not _free(probe)  # the child's exit took nothing from the parent
                assert await until(lambda: _free(probe), BOUND)
            finally:
                os.close(probe)
            assert await reader.recv(timeout=10) == b"x"
            await w.aclose()
            await reader.aclose()

    aio_run(main())


def test_a_send_while_the_channels_loop_does_not_run_keeps_no_lock(tmp_path: Path) -> None:
    # The channel's loop stopped (then closed); the send still writes at once (from another
    # loop here), but no turn of its loop will come to let the lock go: it goes at once.
    path = tmp_path / "g.fifo"
    url = f"fifo://{path}"
    with ipcwire.listen(url, codec="bytes") as listener:
        runner = asyncio.Runner()
        w = runner.run(aio.connect(url, codec="bytes", hold_lock=True, timeout=10))
        probe = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            with listener.accept(timeout=10) as rx:
                asyncio.run(w.send(b"stopped"))
                assert _free(probe)
                assert rx.recv(timeout=10) == b"stopped"
                runner.close()
                asyncio.run(w.send(b"closed"))  # (call_soon would raise: the loop is closed)
                assert _free(probe)
                assert rx.recv(timeout=10) == b"closed"
                w.close()
        finally:
            os.close(probe)
            runner.close()


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_long_writer_posts_its_notice_while_it_waits(tmp_path: Path, api: str) -> None:
    path = tmp_path / "n.fifo"
    url = f"fifo://{path}"
    with ipcwire.listen(url, codec="bytes") as listener:
        probe = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        errors: list[BaseException] = []

        def long_send() -> None:
            try:
                if api == "blocking":
                    with ipcwire.connect(url, codec="bytes", timeout=10) as w:
                        w.send(LONG, timeout=BOUND)
                else:

                    async def send() -> None:
                        async with await aio.connect(url, codec="bytes", timeout=10) as w:
                            await w.send(LONG, timeout=BOUND)

                    asyncio.run(send())
            except BaseException as exc:
                errors.append(exc)

        try:
            fcntl.flock(probe, fcntl.LOCK_SH)  # a short writer's lock, held
            sender = threading.Thread(target=long_send)
            sender.start()
            assert wait_until(lambda: notice.posted(probe) is True, BOUND)
            fcntl.flock(probe, fcntl.LOCK_UN)
            sender.join(BOUND)
            assert not sender.is_alive() and not errors, errors
            assert notice.posted(probe) is False  # withdrawn once it had the lock
            with listener.accept(timeout=10) as rx:
                assert rx.recv(timeout=10) == LONG
        finally:
            os.close(probe)


def test_by_default_no_lock_outlives_the_send_so_a_blocked_loop_cannot_hang_a_long_writer(
    tmp_path: Path,
) -> None:
    # A task that blocks its loop right after a short send, until another writer's long
    # message is through (here a blocking channel's long send in the same thread; as well
    # subprocess.run() of a child writing to the FIFO): with the lock held for the turn, that
    # writer waited for the lock the blocked task held, a hang (a Timeout with one). So holding
    # across turns is opt-in, and by default the lock goes with each send.
    path = tmp_path / "d.fifo"
    url = f"fifo://{path}"
    with ipcwire.listen(url, codec="bytes") as listener:
        probe = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        got: list[bytes] = []

        async def main() -> None:
            async with await aio.connect(url, codec="bytes", timeout=10) as a:
                with (
                    listener.accept(timeout=10) as rx,
                    ipcwire.connect(url, codec="bytes", timeout=10) as b,
                ):
                    await a.send(b"short")
                    assert _free(probe)
                    reading = threading.Thread(
                        target=lambda: got.extend(rx.recv(timeout=BOUND) for _ in range(2))
                    )
                    reading.start()
                    b.send(LONG, timeout=BOUND)  # (blocks this loop, as the user's code did)
                    reading.join(BOUND)

        try:
            asyncio.run(main())
        finally:
            os.close(probe)
        assert got == [b"short", LONG]


def test_a_send_from_another_thread_keeps_no_lock(tmp_path: Path) -> None:
    # The channel's loop runs (idle) in another thread; a send from this thread cannot have
    # that loop let the lock go (call_soon is not thread-safe and would not wake it), so it
    # keeps none. Before: is_running() was true, the lock stayed until that loop woke.
    path = tmp_path / "t.fifo"
    url = f"fifo://{path}"
    with ipcwire.listen(url, codec="bytes") as listener:
        loop = asyncio.new_event_loop()
        opened = threading.Event()
        done = asyncio.Event()
        box: dict[str, Any] = {}

        async def owner() -> None:
            box["ch"] = await aio.connect(url, codec="bytes", timeout=10, hold_lock=True)
            opened.set()
            await done.wait()
            await box["ch"].aclose()

        thread = threading.Thread(target=loop.run_until_complete, args=(owner(),))
        thread.start()
        probe = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            assert opened.wait(BOUND)
            with listener.accept(timeout=10) as rx:
                asyncio.run(box["ch"].send(b"from another thread"))
                assert _free(probe)
                assert rx.recv(timeout=10) == b"from another thread"
        finally:
            os.close(probe)
            loop.call_soon_threadsafe(done.set)
            thread.join(BOUND)
            loop.close()
        assert not thread.is_alive()


def test_hold_lock_is_checked(tmp_path: Path) -> None:
    url = f"fifo://{tmp_path / 'c.fifo'}"

    async def main() -> None:
        async with await aio.listen(url, codec="bytes"):
            with pytest.raises(ipcwire.ConfigurationError, match="give True or False"):
                await aio.connect(url, hold_lock="yes", timeout=5)
            with pytest.raises(ipcwire.ConfigurationError, match="no lock to hold"):
                await aio.connect(url, hold_lock=True, writers="one", timeout=5)

    asyncio.run(main())
    with ipcwire.listen(url, codec="bytes"), pytest.raises(ipcwire.ConfigurationError):
        ipcwire.connect(url, hold_lock=True, timeout=5)  # (asyncio only)
