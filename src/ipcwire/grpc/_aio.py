"""asyncio channels over ``grpc.aio``: one class for both ends of a stream, and the server's
channel for one unary call. ``send`` awaits grpc's write, which waits while the peer is not
reading."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import grpc

from ipcwire._core.codecs import BytesCodec, Codec
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    EndOfChannel,
    IpcwireError,
    LocalProtocolError,
    Timeout,
)
from ipcwire.grpc._protocol import error_from_status
from ipcwire.grpc._sync import (
    HIGH_WATER,
    HIGH_WATER_MESSAGES,
    LOW_WATER,
    LOW_WATER_MESSAGES,
    encode,
)
from ipcwire.options import DEFAULT_REQUEST_TIMEOUT

__all__ = ["AioOneShot", "AioStream"]


class AioStream(AioChannel):
    """One end of an ipcwire gRPC stream (asyncio); see docs/mechanisms/grpc.md.

    ``recv()`` without a timeout awaits grpc's read directly (the ``async for`` loop of a
    handler costs what bare grpc.aio costs). A cancelled grpc.aio read cancels the whole RPC,
    so the first ``recv`` with a timeout starts a reader task instead, which from then on
    moves what arrives into an inbox (pausing while ``HIGH_WATER`` bytes wait there). The
    client's ``request(timeout=...)`` reads directly under the deadline: a request that times
    out closes the channel anyway.
    """

    def __init__(
        self,
        url: str,
        codec: Codec,
        send_limit: int,
        peer: PeerInfo | None,
        *,
        read: Callable[[], Awaitable[Any]],
        write: Callable[[bytes], Awaitable[None]],
        client: bool,
    ) -> None:
        self.url = url
        self._codec = codec
        self._raw = isinstance(codec, BytesCodec)
        self.send_limit = send_limit
        self._peer = peer
        self._read = read
        self._write = write
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._inbox: deque[bytes] = deque()
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._resume: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._end: IpcwireError | None = None
        self._broken: IpcwireError | None = None
        self._closed = False
        self._reader: asyncio.Task[None] | None = None
        self._reading = False  # a task is in a direct read
        self.half_close_ends = True  # False for a plain gRPC client's stream (server side)
        self.read_done: asyncio.Future[None] = self._loop.create_future()
        self.on_close: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    # -- reading --------------------------------------------------------------------------------
    async def _next(self) -> bytes | None:
        """One message from grpc, or None when nothing more comes (the end is recorded)."""
        eof = False
        try:
            msg = await self._read()
            if msg is not grpc.aio.EOF:
                return msg  # type: ignore[no-any-return]
            end: IpcwireError = EndOfChannel(f"{self.url} closed the channel", endpoint=self.url)
            eof = True
        except asyncio.CancelledError:
            # grpc.aio cancels the RPC with the read: nothing more comes either way.
            self.ended(ChannelBroken(f"{self.url}: the read was cancelled", endpoint=self.url))
            raise
        except grpc.aio.AioRpcError as exc:
            end = error_from_status(exc.code(), exc.details(), self.url, doing="receiving")
            if exc.code() == grpc.StatusCode.CANCELLED and not self._client:
                end = ChannelBroken(f"the client of {self.url} went away", endpoint=self.url)
            end.__cause__ = exc
        except Exception as exc:  # grpc.aio raises plain errors once the RPC is over
            end = ChannelBroken(f"{self.url} broke: {exc!r}", endpoint=self.url)
        # A plain client's half-close leaves the server free to answer; anything else ends it.
        self.ended(end, rpc_over=not eof or self._client or self.half_close_ends)
        return None

    async def _read_all(self) -> None:
        inbox = self._inbox
        while True:
            msg = await self._next()
            if msg is None:
                return
            inbox.append(msg)
            self._queued += len(msg)
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)
            if (self._queued > HIGH_WATER or len(inbox) > HIGH_WATER_MESSAGES) and not self._closed:
                self._resume = self._loop.create_future()
                await self._resume

    def ended(self, end: IpcwireError, *, rpc_over: bool = True) -> None:
        """Nothing more will arrive: receiving drains, then raises ``end``; if the RPC is
        over too, sending fails."""
        if self._end is None:
            self._end = end
        if rpc_over and self._broken is None:
            who = "the server" if self._client else "the client"
            self._broken = ChannelBroken(
                f"cannot send to {self.url}: {who} ended the channel ({end})", endpoint=self.url
            )
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        if not self.read_done.done():
            self.read_done.set_result(None)

    def call_done(self, _: object = None) -> None:
        """The RPC is over (client side): sending fails; what arrived can still be read."""
        if self._broken is None:
            self._broken = ChannelBroken(
                f"cannot send to {self.url}: the server ended the channel", endpoint=self.url
            )

    # -- sending --------------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = encode(self._codec, obj, self.send_limit, self.url)
        await self._send([data], timeout)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        items = [encode(self._codec, o, self.send_limit, self.url) for o in objs]
        if items:
            await self._send(items, timeout)

    async def _send(self, items: list[bytes], timeout: float | None) -> None:
        self._check_send()
        try:
            if timeout is None:
                async with self._lock:
                    await self._write_all(items)
            else:
                async with asyncio.timeout(timeout), self._lock:
                    await self._write_all(items)
        except TimeoutError:
            self._broken = ChannelBroken(
                f"an earlier send to {self.url} timed out and cancelled the stream",
                endpoint=self.url,
            )
            raise Timeout(
                f"send to {self.url} did not complete within {timeout} s (the peer is not "
                f"reading); gRPC cancels the stream then, so the channel is broken",
                endpoint=self.url,
            ) from None
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url) from None
            if self._broken is None:
                self._broken = ChannelBroken(f"{self.url} broke: {exc}", endpoint=self.url)
            raise self._broken from exc
        except IpcwireError:
            raise
        except Exception as exc:  # grpc.aio: ExecuteBatchError and friends after the end
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url) from None
            raise ChannelBroken(
                f"{self.url} broke while sending: {exc!r}", endpoint=self.url
            ) from exc

    async def _write_all(self, items: list[bytes]) -> None:
        write = self._write
        for data in items:
            self._check_send()
            await write(data)
            self._sent += 1
            self._bytes_sent += len(data)

    def _check_send(self) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if self._broken is not None:
            raise self._broken

    # -- receiving ------------------------------------------------------------------------------
    async def recv(self, *, timeout: float | None = None) -> Any:
        if self._inbox and not self._closed:
            return self._pop(1)[0]
        if timeout is None and self._reader is None:
            return self._decode(await self._read_direct())
        await self._wait(timeout)
        return self._pop(1)[0]

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        if self._inbox and not self._closed:
            return self._pop(max_messages)
        if timeout is None and self._reader is None:
            return [self._decode(await self._read_direct())]
        await self._wait(timeout)
        return self._pop(max_messages)

    async def _read_direct(self) -> bytes:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if self._end is not None:
            raise self._end
        if self._reading:
            raise LocalProtocolError(
                f"another task is already receiving on {self.url}; receive from one task",
                endpoint=self.url,
            )
        self._reading = True
        try:
            msg = await self._next()
        finally:
            self._reading = False
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if msg is None:
            assert self._end is not None
            raise self._end
        self._received += 1
        self._bytes_received += len(msg)
        return msg

    def _decode(self, msg: bytes) -> Any:
        return msg if self._raw else self._codec.decode(memoryview(msg))

    def _pop(self, limit: int | None) -> list[Any]:
        inbox = self._inbox
        raw = [inbox.popleft()]
        while inbox and (limit is None or len(raw) < limit):
            raw.append(inbox.popleft())
        n = len(raw[0]) if len(raw) == 1 else sum(len(m) for m in raw)
        self._queued -= n
        self._received += len(raw)
        self._bytes_received += n
        r = self._resume
        if (
            r is not None
            and self._queued <= LOW_WATER
            and len(inbox) <= LOW_WATER_MESSAGES
            and not r.done()
        ):
            r.set_result(None)
        if self._raw:
            return raw
        decode = self._codec.decode
        return [decode(memoryview(m)) for m in raw]

    async def _wait(self, timeout: float | None) -> None:
        if self._reader is None and self._end is None:
            if self._reading:
                raise LocalProtocolError(
                    f"another task is already receiving on {self.url}; receive from one task",
                    endpoint=self.url,
                )
            self._reader = self._loop.create_task(self._read_all())
        while True:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            if self._inbox:
                return
            if self._end is not None:
                raise self._end
            if timeout == 0:
                raise Timeout(f"no message from {self.url} yet", endpoint=self.url)
            if self._waiter is not None:
                raise LocalProtocolError(
                    f"another task is already receiving on {self.url}; receive from one task",
                    endpoint=self.url,
                )
            fut = self._waiter = self._loop.create_future()
            try:
                if timeout is None:
                    await fut
                else:
                    async with asyncio.timeout(timeout):
                        await fut
            except TimeoutError:
                raise Timeout(
                    f"no message from {self.url} within {timeout} s", endpoint=self.url
                ) from None
            finally:
                self._waiter = None

    async def request(self, obj: Any, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Send and return the next message (see :meth:`ipcwire.aio.AioChannel.request`);
        on the client, read directly under the deadline (which cancels the RPC if it passes:
        the channel is closed then, as always)."""
        if not self._client or self._reader is not None or self._inbox or self._reading:
            return await super().request(obj, timeout=timeout)
        await self.send(obj, timeout=timeout)
        try:
            async with asyncio.timeout(timeout):
                msg = await self._read_direct()
        except TimeoutError:
            await self.aclose()
            raise Timeout(
                f"no reply from {self.url} within {timeout} s; the channel was closed so that "
                f"a late reply cannot answer a later request. Raise timeout= if the peer is slow",
                endpoint=self.url,
            ) from None
        return self._decode(msg)

    # -- closing --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for f in (self._waiter, self._resume):
            if f is not None and not f.done():
                f.set_result(None)
        if self.on_close is not None:
            self._closing = self._loop.create_task(self.on_close())

    async def aclose(self) -> None:
        self.close()
        if self._closing is not None:
            await asyncio.shield(self._closing)

    def stop_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            self._sent, self._received, self._bytes_sent, self._bytes_received, self._queued
        )


class AioOneShot(AioChannel):
    """The server's channel for one unary call (asyncio): one message in, one reply out."""

    def __init__(
        self, url: str, codec: Codec, request: bytes, peer: PeerInfo | None, send_limit: int
    ) -> None:
        self.url = url
        self._codec = codec
        self._request: bytes | None = request
        self._peer = peer
        self._send_limit = send_limit
        self.reply: bytes | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gone: IpcwireError | None = None
        self._closed = False

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = encode(self._codec, obj, self._send_limit, self.url)
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if self.reply is not None:
            raise LocalProtocolError(
                f"the gRPC call to {self.url} was already answered: a unary call gets one reply",
                endpoint=self.url,
            )
        if self._gone is not None:
            raise self._gone
        self.reply = data
        if not self.done.done():
            self.done.set_result(None)

    def caller_gone(self, why: IpcwireError) -> None:
        self._gone = why
        if not self.done.done():
            self.done.set_result(None)

    async def recv(self, *, timeout: float | None = None) -> Any:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        req, self._request = self._request, None
        if req is None:
            raise EndOfChannel(f"{self.url}: a unary call carries one message", endpoint=self.url)
        return req if isinstance(self._codec, BytesCodec) else self._codec.decode(memoryview(req))

    def close(self) -> None:
        self._closed = True
        if not self.done.done():
            self.done.set_result(None)

    async def aclose(self) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

    def statistics(self) -> ChannelStatistics:
        got = 0 if self._request is not None else 1
        sent = 0 if self.reply is None else 1
        return ChannelStatistics(sent, got, len(self.reply or b""), 0)
