"""AcceptQueue.discard: an asyncio listener takes a channel whose peer left out of its accept
queue (gRPC's listener uses it; tests/grpc/test_review_dead_queued.py)."""

from __future__ import annotations

import asyncio

import pytest

from ipcwire.aio.channel import AcceptQueue, AioChannel
from ipcwire.channel import ChannelStatistics
from ipcwire.errors import ChannelClosed


class _Ch(AioChannel):
    url = "test://queue"

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed_by_queue = False

    async def send(self, obj: object, *, timeout: float | None = None) -> None:
        raise NotImplementedError

    async def recv(self, *, timeout: float | None = None) -> object:
        raise NotImplementedError

    def close(self) -> None:
        self.closed_by_queue = True

    async def aclose(self) -> None:
        self.close()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(0, 0, 0, 0)


def test_discard_takes_one_channel_out_and_keeps_the_order() -> None:
    async def main() -> None:
        q: AcceptQueue[_Ch] = AcceptQueue()
        a, b, c, gone = _Ch("a"), _Ch("b"), _Ch("c"), _Ch("never queued")
        for ch in (a, b, c):
            q.put(ch)
        assert q.discard(b)
        assert not q.discard(b)
        assert not q.discard(gone)
        assert q.qsize() == 2
        assert await q.get("test://queue", 1) is a
        assert await q.get("test://queue", 1) is c
        q.put(a)
        q.close()
        assert a.closed_by_queue
        assert not q.discard(a)  # closed: the queue holds only its wake-up
        with pytest.raises(ChannelClosed):
            await q.get("test://queue", 1)

    asyncio.run(main())
