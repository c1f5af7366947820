"""What the base classes give a mechanism that implements only ``recv``: ``recv_many``.

The channels here are in-memory subclasses of the real base classes: what is under test is the
base classes' own logic (udp, dbus, clipboard, signals and gRPC unary channels use it; their
tests cover it over real transports where timing allows).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest

from ipcwire.aio import AioChannel
from ipcwire.channel import Channel, ChannelStatistics
from ipcwire.errors import ChannelClosed, EndOfChannel, RemoteProtocolError, Timeout

SCRIPT = (b"a", b"bad", b"c", b"end")


def _next(queue: deque[bytes], url: str, closed: bool) -> bytes:
    if closed:
        raise ChannelClosed(f"{url} is closed", endpoint=url)
    if not queue:
        raise Timeout("nothing yet", endpoint=url)
    item = queue.popleft()
    if item == b"bad":
        raise RemoteProtocolError("does not decode", endpoint=url)
    if item == b"eof":
        raise EndOfChannel("peer closed", endpoint=url)
    return item


class Scripted(Channel):
    """Delivers a fixed script of messages; b"bad" stands for one that does not decode."""

    url = "test:scripted"

    def __init__(self, script: tuple[bytes, ...] = SCRIPT) -> None:
        self.queue = deque(script)

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        raise NotImplementedError

    def recv(self, *, timeout: float | None = None) -> Any:
        return _next(self.queue, self.url, self._closed)

    def close(self) -> None:
        self._closed = True

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(0, 0, 0, 0)


class AioScripted(AioChannel):
    """:class:`Scripted` for asyncio."""

    url = "test:aio-scripted"

    def __init__(self, script: tuple[bytes, ...] = SCRIPT) -> None:
        self.queue = deque(script)

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        raise NotImplementedError

    async def recv(self, *, timeout: float | None = None) -> Any:
        return _next(self.queue, self.url, self._closed)

    def close(self) -> None:
        self._closed = True

    async def aclose(self) -> None:
        self.close()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(0, 0, 0, 0)


def test_recv_many_keeps_the_messages_before_an_error() -> None:
    ch = Scripted()
    assert ch.recv_many() == [b"a"]
    with pytest.raises(RemoteProtocolError):
        ch.recv_many()
    assert ch.recv_many() == [b"c", b"end"]


def test_an_error_deferred_by_recv_many_is_raised_by_the_next_recv() -> None:
    """recv_many kept the error of a message it had taken for the next recv_many: a program
    that went on with recv() never saw it (the message was silently skipped)."""
    ch = Scripted()
    assert ch.recv_many() == [b"a"]
    with pytest.raises(RemoteProtocolError):
        ch.recv()
    assert ch.recv() == b"c"
    assert ch.recv() == b"end"


def test_iteration_after_recv_many_sees_the_deferred_error() -> None:
    ch = Scripted((b"a", b"bad", b"c", b"eof"))
    assert ch.recv_many() == [b"a"]
    with pytest.raises(RemoteProtocolError):
        next(iter(ch))
    assert list(ch) == [b"c"]


def test_asyncio_recv_after_recv_many_sees_the_deferred_error() -> None:
    async def main() -> None:
        ch = AioScripted()
        assert await ch.recv_many() == [b"a"]
        with pytest.raises(RemoteProtocolError):
            await ch.recv()
        assert await ch.recv() == b"c"
        assert await ch.recv_many() == [b"end"]
        ch2 = AioScripted()
        assert await ch2.recv_many() == [b"a"]
        with pytest.raises(RemoteProtocolError):
            await ch2.recv_many()
        assert await ch2.recv_many() == [b"c", b"end"]

    asyncio.run(main())


def test_after_close_a_deferred_error_gives_way_to_channel_closed() -> None:
    """Closed wins (docs/internal/API-CONTRACT.md): after close(), recv() raised the error
    recv_many had held back (RemoteProtocolError) instead of ChannelClosed, as the ws
    channels do (495ac83); recv_many did too."""
    ch = Scripted()
    assert ch.recv_many() == [b"a"]
    ch.close()
    with pytest.raises(ChannelClosed):
        ch.recv()
    ch = Scripted()
    assert ch.recv_many() == [b"a"]
    ch.close()
    with pytest.raises(ChannelClosed):
        ch.recv_many()

    async def main() -> None:
        ach = AioScripted()
        assert await ach.recv_many() == [b"a"]
        await ach.aclose()
        with pytest.raises(ChannelClosed):
            await ach.recv()
        ach = AioScripted()
        assert await ach.recv_many() == [b"a"]
        await ach.aclose()
        with pytest.raises(ChannelClosed):
            await ach.recv_many()

    asyncio.run(main())
