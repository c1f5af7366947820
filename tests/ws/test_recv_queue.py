"""A WebSocket channel that is not read holds a bounded number of bytes, not 16 messages.

Before: the library under both drivers paused reading only once over 16 frames (``max_queue``)
waited for ``recv()``, whatever their size, so a peer sending large messages to a channel
nobody read made it hold 17 of them (about 1.1 GB with the default ``max_frame``). Now reading
also pauses once the queued frames hold over ``RECV_QUEUE_HIGH`` bytes (4 MiB); one frame of
any size is still queued, so a larger message, or a message in many fragments, gets through.

Each test has a peer send to a channel that does not read, waits until the channel's side
paused reading (a bounded poll: nothing signals it), checks what its queue holds, then reads
everything: whole, in order. Both drivers, the receiving side a server or a client (their
connections are made in different places), asyncio also on uvloop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.ws._common import RECV_QUEUE_HIGH

MIB = 1 << 20
MESSAGES = [bytes([i + 1]) * MIB for i in range(40)]  # 40 MiB, each message its own byte
BIG = b"\xab" * (2 * RECV_QUEUE_HIGH)  # one message over the mark
FRAGMENT = MIB // 2
FRAGMENTS = [bytes([i + 1]) * FRAGMENT for i in range(40)]  # one message of 20 MiB
AFTER = b"after"  # a small message behind the large one
SIDES = ["server", "client"]  # the side that receives
KW: dict[str, Any] = {"codec": "bytes", "ping_interval": None}


# -- what a channel's library holds (read from its queue, not from ipcwire's own count) ----
def _messages(ch: Channel | AioChannel) -> Any:
    return ch._conn.recv_messages  # type: ignore[union-attr]


def _held_sync(ch: Channel, frame_size: int) -> int:
    """Bytes queued for the blocking channel's ``recv()``: every frame is ``frame_size``
    (the library's queue is a ``queue.SimpleQueue``, which shows only its length)."""
    return int(_messages(ch).frames.qsize()) * frame_size


def _held_aio(ch: AioChannel) -> int:
    return sum(len(frame.data) for frame in _messages(ch).frames.queue)


def _until(cond: Callable[[], bool], what: str) -> None:
    """A bounded poll of a condition nothing can be waited on for (the reader thread's)."""
    give_up = time.monotonic() + 30
    idle = threading.Event()
    while not cond():
        assert time.monotonic() < give_up, f"never {what}"
        idle.wait(0.005)


async def _aio_until(cond: Callable[[], bool], what: str) -> None:
    give_up = time.monotonic() + 30
    while not cond():
        assert time.monotonic() < give_up, f"never {what}"
        await asyncio.sleep(0.005)


# -- blocking -------------------------------------------------------------------------------
@contextmanager
def _pair(side: str) -> Iterator[tuple[Channel, Channel]]:
    """(the side that receives, the side that sends)."""
    with ipcwire.listen("ws://127.0.0.1:0/q", **KW) as lst:
        client = ipcwire.connect(lst.url, timeout=10, **KW)
        with client, lst.accept(timeout=10) as server:
            yield (server, client) if side == "server" else (client, server)


class _Sending(threading.Thread):
    def __init__(self, send: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.send = send
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.send()
        except BaseException as exc:  # (the test looks at it)
            self.error = exc

    def done(self) -> None:
        self.join(30)
        assert not self.is_alive() and self.error is None, self.error


@pytest.mark.parametrize("side", SIDES)
def test_a_channel_not_read_holds_the_mark_and_one_message(side: str) -> None:
    with _pair(side) as (reader, writer):
        messages = _messages(reader)
        bound = RECV_QUEUE_HIGH + MIB

        def send() -> None:
            for m in MESSAGES:
                writer.send(m, timeout=60)

        sending = _Sending(send)
        sending.start()
        _until(lambda: messages.paused, "paused reading")
        held = _held_sync(reader, MIB)
        assert held <= bound, f"{held} bytes queued when reading paused (bound {bound})"
        got: list[bytes] = []
        for i in range(len(MESSAGES)):
            # both ways a message leaves the queue: the short path (no timeout), the library's
            got.append(reader.recv() if i % 2 else reader.recv(timeout=30))
            held = _held_sync(reader, MIB)
            assert held <= bound, f"{held} bytes queued while reading (bound {bound})"
        assert got == MESSAGES
        sending.done()


@pytest.mark.parametrize("side", SIDES)
def test_a_message_over_the_mark_is_queued_alone_and_received(side: str) -> None:
    with _pair(side) as (reader, writer):
        messages = _messages(reader)

        def send() -> None:
            writer.send(BIG, timeout=60)
            writer.send(AFTER, timeout=60)

        sending = _Sending(send)
        sending.start()
        # reading pauses behind it (the small one may have come in the same read)
        _until(lambda: messages.paused or messages.frames.qsize() >= 2, "queued the message")
        assert messages.paused, "reading went on behind a message over the mark"
        assert reader.recv(timeout=30) == BIG
        assert reader.recv(timeout=30) == AFTER
        sending.done()


@pytest.mark.parametrize("timeout", [None, 30.0])
@pytest.mark.parametrize("side", SIDES)
def test_a_message_in_fragments_over_the_mark_is_received(side: str, timeout: float | None) -> None:
    with _pair(side) as (reader, writer):
        messages = _messages(reader)
        bound = RECV_QUEUE_HIGH + FRAGMENT

        def send() -> None:
            writer._conn.send(FRAGMENTS)  # type: ignore[attr-defined]  # the library's fragments
            writer.send(AFTER, timeout=60)

        sending = _Sending(send)
        sending.start()
        _until(lambda: messages.paused, "paused reading")
        held = _held_sync(reader, FRAGMENT)
        assert held <= bound, f"{held} bytes queued when reading paused (bound {bound})"
        # taking the fragments as it joins them resumes reading, until the last one
        assert reader.recv(timeout=timeout) == b"".join(FRAGMENTS)
        assert reader.recv(timeout=timeout) == AFTER
        sending.done()


# -- asyncio --------------------------------------------------------------------------------
async def _aio_pair(side: str) -> tuple[Any, AioChannel, AioChannel]:
    """(listener, the side that receives, the side that sends)."""
    lst = await aio.listen("ws://127.0.0.1:0/q", **KW)
    client = await aio.connect(lst.url, timeout=10, **KW)
    server = await lst.accept(timeout=10)
    return (lst, server, client) if side == "server" else (lst, client, server)


async def _close(*objs: Any) -> None:
    for obj in objs:
        await obj.aclose()


@pytest.mark.parametrize("many", [False, True])
@pytest.mark.parametrize("side", SIDES)
def test_asyncio_a_channel_not_read_holds_the_mark_and_one_message(
    side: str, many: bool, aio_run: AioRun
) -> None:
    """``recv()`` alone takes each message without the library's coroutines, and must
    resume reading itself; ``recv_many()`` also takes them with the library's ``recv``."""

    async def main() -> None:
        lst, reader, writer = await _aio_pair(side)
        messages = _messages(reader)
        bound = RECV_QUEUE_HIGH + MIB

        async def send() -> None:
            for m in MESSAGES:
                await writer.send(m, timeout=60)

        sending = asyncio.ensure_future(send())
        try:
            await _aio_until(lambda: messages.paused, "paused reading")
            held = _held_aio(reader)
            assert held <= bound, f"{held} bytes queued when reading paused (bound {bound})"
            got: list[bytes] = []
            while len(got) < len(MESSAGES):
                if many and len(got) % 2:
                    got.extend(await reader.recv_many(3, timeout=30))
                else:
                    got.append(await reader.recv(timeout=30))
                held = _held_aio(reader)
                assert held <= bound, f"{held} bytes queued while reading (bound {bound})"
            assert got == MESSAGES
            await asyncio.wait_for(sending, 30)
        finally:
            sending.cancel()
            await _close(reader, writer, lst)

    aio_run(main())


@pytest.mark.parametrize("side", SIDES)
def test_asyncio_a_message_over_the_mark_is_queued_alone_and_received(
    side: str, aio_run: AioRun
) -> None:
    async def main() -> None:
        lst, reader, writer = await _aio_pair(side)
        messages = _messages(reader)

        async def send() -> None:
            await writer.send(BIG, timeout=60)
            await writer.send(AFTER, timeout=60)

        sending = asyncio.ensure_future(send())
        try:
            await _aio_until(
                lambda: messages.paused or len(messages.frames) >= 2, "queued the message"
            )
            assert messages.paused, "reading went on behind a message over the mark"
            assert await reader.recv(timeout=30) == BIG
            assert await reader.recv(timeout=30) == AFTER
            await asyncio.wait_for(sending, 30)
        finally:
            sending.cancel()
            await _close(reader, writer, lst)

    aio_run(main())


@pytest.mark.parametrize("side", SIDES)
def test_asyncio_a_message_in_fragments_over_the_mark_is_received(
    side: str, aio_run: AioRun
) -> None:
    async def main() -> None:
        lst, reader, writer = await _aio_pair(side)
        messages = _messages(reader)
        bound = RECV_QUEUE_HIGH + FRAGMENT

        async def send() -> None:
            await writer._conn.send(FRAGMENTS)  # type: ignore[attr-defined]
            await writer.send(AFTER, timeout=60)

        sending = asyncio.ensure_future(send())
        try:
            await _aio_until(lambda: messages.paused, "paused reading")
            held = _held_aio(reader)
            assert held <= bound, f"{held} bytes queued when reading paused (bound {bound})"
            assert await reader.recv(timeout=30) == b"".join(FRAGMENTS)
            assert await reader.recv(timeout=30) == AFTER
            await asyncio.wait_for(sending, 30)
        finally:
            sending.cancel()
            await _close(reader, writer, lst)

    aio_run(main())
