"""gRPC review (rev-grpc2): channels whose client left before anyone accepted them leave the
listener's accept queue, on both APIs, and accept() never hands one out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import grpc
import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout
from ipcwire.grpc.aio import AioGrpcListener
from ipcwire.grpc.blocking import GrpcListener

N = 40
STREAM = "/ipcwire.Channel/Stream"
CALL = "/ipcwire.Channel/Call"


def _until(cond: Callable[[], bool], what: str) -> None:
    """A bounded poll: grpcio runs handlers and end-of-RPC callbacks in its own threads and
    offers nothing to wait on from outside."""
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        threading.Event().wait(0.01)


def test_blocking_listener_drops_channels_whose_client_left() -> None:
    """Plain gRPC streams and calls, queued for accept(), then cancelled (a client that gives
    up, or dies): before, each stayed queued (a probe counted 64 of 600 with max_channels=64,
    the rest refused) and accept() handed them out as channels, broken at first use."""
    with ipcwire.listen("grpc://127.0.0.1:0", max_channels=2 * N + 1) as lis:
        assert isinstance(lis, GrpcListener)
        queued = lis._ready
        with grpc.insecure_channel(lis.url.removeprefix("grpc://")) as gch:
            streams = [gch.stream_stream(STREAM)(iter([b"1"]), timeout=30) for _ in range(N)]
            calls = [gch.unary_unary(CALL).future(b"1", timeout=30) for _ in range(N)]
            _until(lambda: len(queued) == 2 * N, "the streams and calls were not all queued")
            for c in (*streams, *calls):
                c.cancel()
            _until(lambda: not queued, f"{len(queued)} dead channels still queued")
        with pytest.raises(Timeout):
            lis.accept(timeout=0.2)
        with ipcwire.connect(lis.url, timeout=5) as client:  # and it still serves
            client.send(b"live")
            with lis.accept(timeout=5) as ch:
                assert ch.recv(timeout=5) == b"live"


def test_asyncio_listener_drops_channels_whose_client_left() -> None:
    """The same on the asyncio listener: before, all 600 of 600 cancelled streams stayed in
    its accept queue."""

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0") as lis:
            assert isinstance(lis, AioGrpcListener)
            queued = lis._ready
            async with grpc.aio.insecure_channel(lis.url.removeprefix("grpc://")) as gch:
                streams = [gch.stream_stream(STREAM)() for _ in range(N)]
                for s in streams:
                    await s.write(b"1")
                calls = [gch.unary_unary(CALL)(b"1", timeout=30) for _ in range(N)]
                while queued.qsize() < 2 * N:  # bounded by the test's own deadline below
                    await asyncio.sleep(0.01)
                for c in (*streams, *calls):
                    c.cancel()
                while queued.qsize():
                    await asyncio.sleep(0.01)
            with pytest.raises(Timeout):
                await lis.accept(timeout=0.2)
            async with await aio.connect(lis.url, timeout=5) as client:
                await client.send(b"live")
                async with await lis.accept(timeout=5) as ch:
                    assert await ch.recv(timeout=5) == b"live"

    async def bounded() -> None:
        async with asyncio.timeout(10):
            await main()

    asyncio.run(bounded())
