"""asyncio fifo reader: the session ends when its writers have left, however they left.

Linux's epoll shows a FIFO's read end a hang-up once no writer is left, except on a read end
opened while no writer had the FIFO open, until a writer opens it (fs/pipe.c: ``fifo_open``
sets the end's ``f_pipe`` to the writer counter only then, and ``pipe_poll`` reports EPOLLHUP
only while they differ). A read of 0 tells in every case. The listener keeps the FIFO open
between sessions, so a session can begin with the messages of writers that all left before it:
then epoll shows the data but never the end, and the transport reads again after data
(``FdTransport``'s ``read_to_eagain``) until a read says EAGAIN (a writer is there: the FIFO
has met a writer since this end was opened, and epoll shows the end from then on).

The first test fails without that read, the second without the read when reading resumes
(it missed the end before); the others pin that a writer killed with ``kill -9``
(no goodbye, whatever the order of the opens) ends the session, and that the extra read
stops once it has said EAGAIN (it cost a system call and a Python exception per message)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests._aio_listeners import until
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.errors import EndOfChannel

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}

# Connects, says so, then sends a message per line of stdin; never closes by itself.
WRITER = """
import sys, ipcwire
ch = ipcwire.connect(sys.argv[1], framing="ndjson", timeout=20)
print("connected", flush=True)
for line in sys.stdin:
    ch.send({"n": int(line)})
    print("sent", flush=True)
"""


def _spawn(script: str, url: str, says: str) -> subprocess.Popen[str]:
    """A Python child running ``script`` for ``url``, once it printed ``says``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, url],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == says
    return proc


def _writer(url: str) -> subprocess.Popen[str]:
    return _spawn(WRITER, url, "connected")


def _send(proc: subprocess.Popen[str], n: int) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{n}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "sent"


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(20)
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


def test_a_session_ends_after_the_messages_of_writers_that_left_before_it(
    tmp_path: Path, aio_run: AioRun
) -> None:
    path = tmp_path / "s.fifo"
    url = f"fifo://{path}"

    async def main() -> None:
        async with await aio.listen(url, framing="ndjson") as listener:
            await (await listener.accept()).aclose()
            # Between sessions the listener holds the FIFO open: a writer writes and leaves.
            subprocess.run(["sh", "-c", f"echo '{{\"n\": 1}}' > {path}"], check=True)
            w = _writer(url)
            _send(w, 2)
            _kill(w)  # no writer left when the next session opens the FIFO
            async with await listener.accept() as reader:
                assert await reader.recv(timeout=20) == {"n": 1}
                assert await reader.recv(timeout=20) == {"n": 2}
                with pytest.raises(EndOfChannel):  # not a wait until the timeout
                    await reader.recv(timeout=10)

    aio_run(main())


def test_the_end_is_seen_when_the_read_that_took_the_last_data_paused_reading(
    tmp_path: Path, aio_run: AioRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As above, but the messages left behind fill the channel's queue past its high water
    # mark in the read that empties the FIFO: reading pauses there, with no read after it.
    # (Past 4 MiB for real, which needs a FIFO grown beyond the unprivileged 1 MiB.)
    import fcntl

    import ipcwire._stream.aio as stream_aio

    monkeypatch.setattr(stream_aio, "_HIGH_WATER", 100_000)
    path = tmp_path / "p.fifo"
    url = f"fifo://{path}"

    async def main() -> None:
        async with await aio.listen(url, codec="bytes") as listener:
            await (await listener.accept()).aclose()
            w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
            for i in range(30):  # 120 KB: one read of the channel's buffer
                os.write(w, (4000).to_bytes(4, "big") + bytes([i]) * 4000)
            os.close(w)
            async with await listener.accept() as reader:
                transport: Any = reader._transport  # type: ignore[attr-defined]
                # until the read past the mark paused it
                assert await until(lambda: not transport.is_reading(), 20)
                for i in range(30):
                    assert await reader.recv(timeout=20) == bytes([i]) * 4000
                with pytest.raises(EndOfChannel):
                    await reader.recv(timeout=10)

    aio_run(main())


@pytest.mark.parametrize("when", ["before the session", "in the session"])
@pytest.mark.parametrize("sends", [0, 1])
def test_a_writer_killed_9_ends_the_session(
    tmp_path: Path, aio_run: AioRun, when: str, sends: int
) -> None:
    url = f"fifo://{tmp_path}/k.fifo"

    async def main() -> None:
        async with await aio.listen(url, framing="ndjson") as listener:
            await (await listener.accept()).aclose()
            w = _writer(url) if when == "before the session" else None
            async with await listener.accept() as reader:
                if w is None:
                    w = _writer(url)
                for n in range(sends):
                    _send(w, n)
                    assert await reader.recv(timeout=20) == {"n": n}
                _kill(w)
                with pytest.raises(EndOfChannel):
                    await reader.recv(timeout=10)

    aio_run(main())


SERVER = """
import sys, ipcwire
with ipcwire.listen(sys.argv[1], framing="ndjson") as listener:
    print("listening", flush=True)
    ch = listener.accept(timeout=20)
    ch.send(ch.recv(timeout=20))
    print("replied", flush=True)
    sys.stdin.readline()
"""


def test_a_reply_client_sees_its_server_killed_9(tmp_path: Path, aio_run: AioRun) -> None:
    url = f"fifo://{tmp_path}/q.fifo?reply={tmp_path}/r.fifo"

    async def main() -> None:
        server = _spawn(SERVER, url, "listening")
        try:
            assert server.stdout is not None
            async with await aio.connect(url, framing="ndjson", timeout=20) as ch:
                assert await ch.request({"hi": 1}, timeout=20) == {"hi": 1}
                assert server.stdout.readline().strip() == "replied"
                _kill(server)
                with pytest.raises(EndOfChannel):
                    await ch.recv(timeout=10)
        finally:
            if server.poll() is None:
                _kill(server)

    aio_run(main())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's FIFO hang-up rule")
def test_the_read_after_data_stops_once_a_writer_was_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"fifo://{tmp_path}/c.fifo"
    again = 0
    readv = os.readv

    def counting(fd: int, bufs: Any) -> int:
        nonlocal again
        try:
            return readv(fd, bufs)
        except BlockingIOError:
            again += 1
            raise

    async def main() -> None:
        listener = await aio.listen(url, framing="ndjson")
        async with listener, await listener.accept() as reader:
            with ipcwire.connect(url, framing="ndjson") as w:
                for n in range(50):
                    w.send({"n": n})
                    assert await reader.recv(timeout=20) == {"n": n}
                    for _ in range(3):  # the loop's turns: a read after data would run
                        await asyncio.sleep(0)
            with pytest.raises(EndOfChannel):
                await reader.recv(timeout=10)

    monkeypatch.setattr(os, "readv", counting)
    asyncio.run(main())
    assert again <= 2  # was one per message
