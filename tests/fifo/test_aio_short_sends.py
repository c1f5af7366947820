"""asyncio fifo writer: a short message is written at once, without the send lock's turn in the
event loop (``AioFifoChannel._write_at_once``), only when nothing stands in its way.

The tests pin what that shortcut must keep: a long message of the same channel that waits for
room holds the FIFO through the same open file (its flock does not stop a short write of this
channel), so short sends meanwhile wait behind it, in order; and a write the kernel cut short
(never whole-or-nothing broken on Linux, but the stream would be out of step) is refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from tests._aio_listeners import until
from tests._loops import AioRun

import ipcwire
import ipcwire.fifo.aio as fifo_aio
from ipcwire import aio
from ipcwire.errors import ChannelBroken

BOUND = 20.0


def _pipe_is_full(fd: int) -> bool:
    import array
    import fcntl
    import termios

    size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    queued = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, queued)
    return queued[0] >= size


@pytest.mark.parametrize("many", [False, True])
def test_a_short_send_waits_behind_a_long_one_of_the_same_channel(
    tmp_path: Path, aio_run: AioRun, many: bool
) -> None:
    # One writer: a task sends 4 MiB, which waits for room part-way, holding the FIFO's lock
    # exclusively. Room comes, and another task's short send on the same channel runs before
    # the long one's: it must wait for its turn (a flock of the same open file does not stop
    # it, and its unlock would drop the long one's), not write into the gap.
    url = f"fifo://{tmp_path}/w.fifo"
    long = b"A" * (4 << 20)
    frame = len(long).to_bytes(4, "big") + long + b"\0\0\0\x05short"

    async def main() -> bytes:
        # the bytes are read through a second read end: the channel's reader never reads
        with ipcwire.listen(url, codec="bytes") as listener, listener.accept():
            probe = os.open(tmp_path / "w.fifo", os.O_RDONLY | os.O_NONBLOCK)
            try:
                w = await aio.connect(url, codec="bytes")
                sending_long = asyncio.ensure_future(w.send(long, timeout=30))
                # the OS shows it only by polling
                assert await until(lambda: _pipe_is_full(probe), BOUND)
                got = os.read(probe, 65536)  # room; the long send wakes on a later turn
                short = w.send_many([b"short"], timeout=30) if many else w.send(b"short")
                sending_short = asyncio.ensure_future(short)  # runs first

                def more() -> bool:
                    nonlocal got
                    with contextlib.suppress(BlockingIOError):
                        got += os.read(probe, 1 << 20)
                    return len(got) >= len(frame)

                assert await until(more, BOUND), f"{len(got)} of {len(frame)} bytes"
                await sending_long
                await sending_short
                await w.aclose()
            finally:
                os.close(probe)
        return got

    got = aio_run(main())
    if got != frame:  # (not pytest's diff of 4 MiB)
        at = next((i for i, (a, b) in enumerate(zip(got, frame, strict=False)) if a != b), None)
        pytest.fail(f"{len(got)} bytes instead of {len(frame)}, differing from byte {at}")


def test_a_short_write_cut_by_the_kernel_breaks_the_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # POSIX writes up to PIPE_BUF bytes to a pipe whole or not at all; were one cut anyway,
    # the stream would be out of step: the send says so and no send follows it.
    url = f"fifo://{tmp_path}/cut.fifo"

    class CutOs:
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        @staticmethod
        def write(fd: int, data: Any) -> int:
            return os.write(fd, bytes(data)[:3])

    async def main() -> None:
        async with (
            await aio.listen(url, codec="bytes") as listener,
            await aio.connect(url, codec="bytes") as w,
        ):
            reader = await listener.accept(timeout=10)
            await w.send(b"whole")
            assert await reader.recv(timeout=10) == b"whole"
            monkeypatch.setattr(fifo_aio, "os", CutOs())
            with pytest.raises(ChannelBroken, match="cut short after 3 bytes"):
                await w.send(b"cut")
            monkeypatch.setattr(fifo_aio, "os", os)
            with pytest.raises(ChannelBroken, match="cut short"):
                await w.send(b"more")
            await reader.aclose()

    asyncio.run(main())
