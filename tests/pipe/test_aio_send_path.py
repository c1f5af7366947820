"""asyncio pipe channel: a send reaches the transport's ``write`` in one call of the driver's
own, and a receive of a queued message is one call (``AioPipeChannel``'s usual case). Before,
a send went through ``_write`` (the pipe's), ``_fd_transport``, ``_write`` (the stream
channel's) and ``is_closing`` on the way, and a receive through a second coroutine: a third of
a send's Python work, measured under callgrind (10.7k -> 7.1k instructions per 64-byte send).
Counted, not timed: Python calls of the driver's modules (``sys.setprofile``, this thread).

The other tests pin what the checks that moved must still say: the wrong end of a one-way
pipe, a vanished reader, a full pipe whose loop has ended."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest
from tests._aio_listeners import until
from tests._loops import AioRun

from ipcwire import pipe
from ipcwire.errors import ChannelBroken, ChannelClosed, LocalProtocolError

_DRIVER = ("/ipcwire/pipe/", "/ipcwire/_stream/", "/ipcwire/spawn/")


@contextmanager
def _driver_calls() -> Iterator[list[str]]:
    """The Python functions of the pipe/stream driver called meanwhile (this thread)."""
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and any(d in frame.f_code.co_filename for d in _DRIVER):
            calls.append(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(None)


def test_a_send_and_a_queued_receive_take_one_call_each(aio_run: AioRun) -> None:
    async def main() -> tuple[list[str], list[str]]:
        a, b = pipe.ends()
        tx = await a.aopen(codec="bytes")
        rx = await b.aopen(codec="bytes")
        with _driver_calls() as sends:
            for _ in range(10):
                await tx.send(b"x" * 64)
        queue = rx._queue
        assert await until(lambda: len(queue) == 10, 10)  # the loop read them
        with _driver_calls() as recvs:
            for _ in range(10):
                assert await rx.recv(timeout=10) == b"x" * 64
        await tx.aclose()
        await rx.aclose()
        return sends, recvs

    sends, recvs = aio_run(main())
    assert sends == ["AioPipeChannel.send", "FdTransport.write"] * 10  # before: 6 calls each
    # before: AioPipeChannel.recv, then AioStreamChannel.recv in a second coroutine
    assert recvs == ["AioStreamChannel.recv"] * 10 + ["AioStreamChannel._drained"]


def test_the_wrong_end_of_a_one_way_pipe_says_so(aio_run: AioRun) -> None:
    async def main() -> None:
        w, r = pipe.ends(duplex=False)
        tx = await w.aopen(codec="bytes")
        rx = await r.aopen(codec="bytes")
        with pytest.raises(LocalProtocolError, match="sending end of a one-way channel"):
            await tx.recv(timeout=1)
        with pytest.raises(LocalProtocolError, match="receiving end of a one-way channel"):
            await rx.send(b"x")
        await tx.send(b"ok")
        assert await rx.recv(timeout=10) == b"ok"
        assert tx.statistics().messages_sent == 1
        assert tx.statistics().bytes_sent == 2
        tx.close()
        with pytest.raises(ChannelClosed):  # closed wins
            await tx.recv(timeout=1)
        await tx.aclose()
        await rx.aclose()

    aio_run(main())


def test_a_send_after_the_reader_vanished_is_broken(aio_run: AioRun) -> None:
    async def main() -> None:
        w, r = pipe.ends(duplex=False)
        tx = await w.aopen(codec="bytes")
        r.close()
        with pytest.raises(ChannelBroken):
            for _ in range(2):  # the first write fails quietly (EPIPE), the next one says so
                await tx.send(b"x")
        await tx.aclose()

    aio_run(main())


def test_a_full_pipe_whose_loop_ended_says_whose_loop_it_is() -> None:
    # A send from another loop writes while the pipe has room; the rest of a message that
    # does not fit would wait on the channel's loop, which has ended.
    w, r = pipe.ends(duplex=False)
    runner = asyncio.Runner()
    tx = runner.run(w.aopen(codec="bytes"))
    runner.close()

    async def fill() -> None:
        for _ in range(100_000):  # 6.8 MB, more than any pipe holds
            await tx.send(b"z" * 64)

    try:
        with pytest.raises(LocalProtocolError, match="belongs to another event loop"):
            asyncio.run(fill())
    finally:
        tx.close()
        r.close()
