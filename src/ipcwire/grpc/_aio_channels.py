"""gRPC, asyncio driver: the client channels, unary calls (:class:`AioGrpcUnaryChannel`) and
one bidirectional stream (:class:`AioGrpcStreamChannel`, over ``_aio.AioStream``); opening them
and the listener are ``aio.py``'s.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections import deque
from collections.abc import Iterable
from typing import Any

from ipcwire._core.codecs import encode_message
from ipcwire._core.wire import checked_decode
from ipcwire._deadline import limit
from ipcwire.aio._without_loop import handed_to_loop, not_this_loop
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import (
    _CLOSED_BECAUSE,
    ChannelStatistics,
    PeerInfo,
    closed_because,
    closed_error,
)
from ipcwire.errors import (
    EndOfChannel,
    LocalProtocolError,
)
from ipcwire.grpc._aio import AioStream, task_cancelled
from ipcwire.grpc._channel import UnaryTries, forked
from ipcwire.grpc._grpcio import grpc
from ipcwire.grpc._protocol import (
    CALL,
    NO_REPLY_KEY,
    check_welcome,
    metadata_dict,
)
from ipcwire.options import (
    DEFAULT_REQUEST_TIMEOUT,
    ChannelOptions,
)

__all__ = ["LINGERING", "AioGrpcStreamChannel", "AioGrpcUnaryChannel"]

_NO_REPLY = object()  # a call the server handled without a reply (NO_REPLY_KEY)
# The closing tasks of client channels (a close()'s, a linger's): the loop keeps only weak
# references to tasks.
LINGERING: set[asyncio.Task[None]] = set()


class AioGrpcUnaryChannel(AioChannel):
    """Unary calls (asyncio): see :class:`ipcwire.grpc.blocking.GrpcUnaryChannel`."""

    def __init__(
        self,
        url: str,
        options: ChannelOptions,
        gch: Any,
        metadata: Any,
        nonce: bytes,
        reconnect: float | None = None,
    ) -> None:
        self.url = url
        self._options = options
        self._reconnect = reconnect or 0.0  # how long a refused call is tried again
        self._nonce = nonce
        self._codec = options.codec
        self._codec_decode = checked_decode(options.codec, url)  # RemoteProtocolError
        self._gch = gch
        self._md = metadata
        self._method = gch.unary_unary(CALL)
        self._replies: deque[Any] = deque()
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._owner = os.getpid()
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    async def _call(self, obj: Any, timeout: float | None) -> Any:
        if self._closed:
            raise closed_error(self)
        if os.getpid() != self._owner:
            raise forked(self.url, self._owner)
        if (wrong := not_this_loop(self._loop, self.url)) is not None:
            raise closed_error(self) if self._closed else wrong  # (Closed wins)
        timeout = limit(timeout, self.url)  # grpc takes inf for a deadline in the past
        data = encode_message(self._codec, obj, 2**31 - 1, self.url)
        tries = UnaryTries(self.url, self._reconnect, timeout)
        while True:
            call = self._method(data, timeout=tries.left(), metadata=self._md)
            try:
                reply = await call
                trailing = await call.trailing_metadata()
                break
            except asyncio.CancelledError:
                # close() cancels the calls in flight, and grpc.aio raises CancelledError in
                # their tasks: no cancellation of theirs.
                if self._closed and not task_cancelled():
                    raise closed_error(self) from None
                raise
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    raise closed_error(self) from None
                pause = tries.failed(exc.code(), exc.details(), self._sent, len(data), exc)
            await asyncio.sleep(pause)
            tries.paused(self._closed)
        said = metadata_dict(trailing)
        if self._options.token is not None:  # the server proves it has the token too
            check_welcome(said, self._options, self.url, self._nonce)
        self._sent += 1
        self._bytes_sent += len(data)
        if said.get(NO_REPLY_KEY):
            return _NO_REPLY
        self._received += 1
        self._bytes_received += len(reply)
        return self._codec_decode(memoryview(reply))

    async def _exchange(self, obj: Any, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Any:
        if self._replies:
            await self.send(obj, timeout=timeout)
            return await self.recv(timeout=0)
        reply = await self._call(obj, timeout)
        if reply is _NO_REPLY:
            raise EndOfChannel(f"{self.url} handled the call but sent no reply", endpoint=self.url)
        return reply

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        reply = await self._call(obj, timeout)
        if reply is not _NO_REPLY:
            self._replies.append(reply)

    async def recv(self, *, timeout: float | None = None) -> Any:
        if self._closed:
            raise closed_error(self)
        if self._replies:
            return self._replies.popleft()
        raise LocalProtocolError(
            f"{self.url} is used with unary calls (unary=True): the server only speaks in reply "
            f"to a call. Use request(), or send() and then recv() the reply",
            endpoint=self.url,
        )

    def close(self) -> None:
        if not self._closed and not handed_to_loop(self._loop, self.close):  # (other thread)
            self._closed = True
            if self._loop.is_closed():
                # The channel outlived its loop (asyncio.run() returned): grpc.aio's channel
                # closes only in it, and no call of it can be in flight. Marked closed.
                return
            task = self._loop.create_task(self._gch.close())
            LINGERING.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(LINGERING.discard)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._gch.close()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(self._sent, self._received, self._bytes_sent, self._bytes_received)


class AioGrpcStreamChannel(AioChannel):
    """A client's channel over one stream (asyncio): what :func:`connect` returns.

    The stream's state (:class:`AioStream`) is what grpc.aio's callbacks and ipcwire's tasks
    hold (the call's done callback, the reader task, the close and linger tasks); this object
    is held by the application alone, so that dropping it without close() is seen: a
    ``ResourceWarning``, and the stream is closed as close() closes it (the server sees the
    end; the call and its gRPC channel go once the server ends its RPC, or after LINGER).
    Before, the channel was that state itself, kept alive by those callbacks: the RPC stayed
    open, the server never saw the end, until the server ended the call itself.
    """

    def __init__(self, stream: AioStream) -> None:
        self._s = stream
        self.url = stream.url
        # The stream's own methods, bound here: one call (and, asyncio, one coroutine) less
        # per message than the delegating methods below, which document the API. They hold
        # the stream, not this object, so dropping this object is still seen (__del__).
        self.send = stream.send  # type: ignore[method-assign]
        self.send_many = stream.send_many  # type: ignore[method-assign]
        self.recv = stream.recv  # type: ignore[method-assign]
        self.recv_many = stream.recv_many  # type: ignore[method-assign]

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        await self._s.send(obj, timeout=timeout)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        await self._s.send_many(objs, timeout=timeout)

    async def recv(self, *, timeout: float | None = None) -> Any:
        return await self._s.recv(timeout=timeout)

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        return await self._s.recv_many(max_messages, timeout=timeout)

    def statistics(self) -> ChannelStatistics:
        return self._s.statistics()

    @property
    def closed(self) -> bool:
        return self._s.closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._s.peer

    def close(self) -> None:
        self._pass_why()
        self._s.close()

    async def aclose(self) -> None:
        self._pass_why()
        await self._s.aclose()

    async def _aclose_after(self, exc: BaseException | None) -> None:
        self._pass_why()
        await self._s._aclose_after(exc)

    def _pass_why(self) -> None:
        """Why request() closes this channel (recorded on this object) is what the stream's
        ChannelClosed says."""
        why = self.__dict__.get(_CLOSED_BECAUSE)
        if why:
            closed_because(self._s, why)

    def __getattr__(self, name: str) -> Any:  # the stream's own state (tests, diagnostics)
        if name == "_s":
            raise AttributeError(name)
        return getattr(self._s, name)

    def __del__(self) -> None:
        """Dropped without close(): warn, and close the stream as close() does, in its loop's
        next turn (the collector may run anywhere, in the middle of the stream's own code or
        in another thread); once the loop is closed, at once (the call is cancelled)."""
        s = self.__dict__.get("_s")
        if s is None or s._closed:
            return
        if os.getpid() == s._owner:
            warnings.warn(
                f"unclosed gRPC channel {self.url!r}: the server is told it ended; close() "
                "it, or use 'async with'",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )
        loop = s._loop
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(s.close)
                return
            except RuntimeError:  # closed meanwhile
                pass
        s.close()
