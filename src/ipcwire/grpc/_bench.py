"""The bare grpcio library as ``ipcwire bench`` baselines: ``raw/grpc`` and
``raw/grpc/asyncio`` (the ids the ipcwire gRPC rows compare with).

A generic bidirectional bytes stream (identity serializers, no generated code), the same
service shape as ipcwire's, used directly: side B writes with a request iterator and reads
the response iterator (sync) or ``call.write``/``call.read`` (asyncio); side A reads the
request iterator in its own thread (the handler returns at once with a generator that yields
from a queue: grpcio's sync server API offers no other way to both read and write at will),
or ``context.read``/``context.write`` (asyncio). ipcwire's blocking driver has the same shape,
but packs the messages queued behind one into one gRPC message, so its throughput ratio to
this baseline is marked not comparable (``unequal``); round trips compare.
Imported by the bench when listed in ``CONTENDER_MODULES``; it registers its contenders.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from concurrent import futures
from typing import Any

from ipcwire.bench.contender import Contender, Task, register_contender
from ipcwire.grpc._channel import HIGH_WATER, HIGH_WATER_MESSAGES

__all__ = ["CONTENDERS"]

_MAX = 2**27
_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX),
    ("grpc.max_send_message_length", _MAX),
    ("grpc.so_reuseport", 0),
]
_STOP = object()


class _Link:
    """Side A, blocking: one stream; ``recv`` reads grpcio's request iterator directly."""

    def __init__(self, request_iterator: Iterator[bytes]) -> None:
        self.recv = request_iterator.__next__
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def send(self, message: bytes) -> None:
        self.outbox.put(bytes(message))

    def responses(self) -> Iterator[bytes]:
        while True:
            m = self.outbox.get()
            if m is _STOP:
                return
            yield m

    def close(self) -> None:
        self.outbox.put(_STOP)


class _Acceptor:
    def __init__(self) -> None:
        from ipcwire.grpc._grpcio import grpc

        self._ready: queue.SimpleQueue[_Link] = queue.SimpleQueue()

        def stream(request_iterator: Any, context: Any) -> Iterator[bytes]:
            link = _Link(request_iterator)
            context.add_callback(link.close)  # the RPC is over: let the generator return
            self._ready.put(link)
            return link.responses()

        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(stream)}
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(4), options=_OPTIONS)
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.address = f"127.0.0.1:{port}"

    def accept(self) -> _Link:
        return self._ready.get(timeout=30)

    def close(self) -> None:
        self._server.stop(None)


def side_a(task: Task, shared: object) -> _Acceptor:
    return _Acceptor()


class _Client:
    def __init__(self, address: str, size: int) -> None:
        from ipcwire.grpc._grpcio import grpc

        self._channel = grpc.insecure_channel(address, options=_OPTIONS)
        # Bounded like ipcwire's send queue (4 MiB and 1024 messages), so a fast sender
        # waits for grpcio and both rows hold about the same backlog; but never fewer than
        # 16 messages, so from 256 KiB on the baseline may hold more (16 MiB at 1 MiB, where
        # ipcwire holds 4): if anything, in the baseline's favour.
        depth = min(HIGH_WATER_MESSAGES, max(16, HIGH_WATER // max(size, 1)))
        self._out: queue.Queue[Any] = queue.Queue(depth)
        self._call = self._channel.stream_stream("/bench.Echo/Stream")(self._requests())
        self.recv = self._call.__next__

    def _requests(self) -> Iterator[bytes]:
        while True:
            m = self._out.get()
            if m is _STOP:
                return
            yield m

    def send(self, message: bytes) -> None:
        self._out.put(bytes(message))

    def close(self) -> None:
        self._out.put(_STOP)
        self._call.cancel()
        self._channel.close()


def side_b(task: Task, address: str, shared: object) -> _Client:
    return _Client(address, task.size)


class _AioLink:
    def __init__(self, context: Any, done: asyncio.Event) -> None:
        self.recv = context.read
        self._write = context.write
        self._done = done

    async def send(self, message: bytes) -> None:
        await self._write(bytes(message))

    async def aclose(self) -> None:
        self._done.set()


class _AioAcceptor:
    def __init__(self, server: Any, address: str, ready: asyncio.Queue[_AioLink]) -> None:
        self._server = server
        self.address = address
        self._ready = ready

    async def accept(self) -> _AioLink:
        return await asyncio.wait_for(self._ready.get(), 30)

    async def aclose(self) -> None:
        await self._server.stop(None)


async def aio_side_a(task: Task, shared: object) -> _AioAcceptor:
    from ipcwire.grpc._grpcio import grpc

    ready: asyncio.Queue[_AioLink] = asyncio.Queue()

    async def stream(request_iterator: Any, context: Any) -> None:
        done = asyncio.Event()
        ready.put_nowait(_AioLink(context, done))
        await done.wait()

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(stream)}
    )
    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return _AioAcceptor(server, f"127.0.0.1:{port}", ready)


class _AioClient:
    def __init__(self, address: str) -> None:
        from ipcwire.grpc._grpcio import grpc

        self._channel = grpc.aio.insecure_channel(address, options=_OPTIONS)
        self._call = self._channel.stream_stream("/bench.Echo/Stream")()
        self.recv = self._call.read

    async def send(self, message: bytes) -> None:
        await self._call.write(bytes(message))

    async def aclose(self) -> None:
        self._call.cancel()
        await self._channel.close()


async def aio_side_b(task: Task, address: str, shared: object) -> _AioClient:
    return _AioClient(address)


# Why a throughput ratio to this baseline is not a comparison: equal work would mean this
# baseline packing queued messages as ipcwire's channel does (ipcwire's own protocol
# rewritten), no longer grpcio used directly.
_UNEQUAL = (
    "ipcwire's gRPC channel packs the messages queued behind one into a single gRPC message, "
    "while the raw baseline writes one gRPC message per message, so the ratio counts gRPC "
    "messages saved, not ipcwire's overhead (round trips, one message at a time, do compare)"
)


def _contender(api: str) -> Contender:
    aio = api == "asyncio"
    return Contender(
        id="raw/grpc" + ("/asyncio" if aio else ""),
        title="grpcio generic stream" + (", asyncio" if aio else ""),
        group="baseline",
        mechanism="grpc",
        api="asyncio" if aio else "blocking",
        side_a=aio_side_a if aio else side_a,
        side_b=aio_side_b if aio else side_b,
        framing="gRPC message (HTTP/2 DATA)",
        overhead=5,
        requires=("grpc",),
        note="grpcio used directly: a generic bidirectional bytes stream",
        unequal={"throughput": _UNEQUAL},
    )


CONTENDERS = (_contender("blocking"), _contender("asyncio"))
for _c in CONTENDERS:
    register_contender(_c)
