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
from ipcwire.grpc._channel import (
    HIGH_WATER,
    HIGH_WATER_MESSAGES,
    LOW_WATER,
    LOW_WATER_MESSAGES,
    OneShotCore,
    encode,
)
from ipcwire.grpc._protocol import (
    BATCH_MARKER,
    error_from_status,
    marker_check,
    pack_batch,
    plan_batches,
    unpack_batch,
)
from ipcwire.options import DEFAULT_REQUEST_TIMEOUT

__all__ = ["AioOneShot", "AioStream"]

_EOF: Any = grpc.aio.EOF
_UsageError: Any = grpc.aio.UsageError


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
        self._writing = False
        self._write_waiters: deque[asyncio.Future[None]] = deque()
        self._end: IpcwireError | None = None
        self._broken: IpcwireError | None = None
        self._closed = False
        self._reader: asyncio.Task[None] | None = None
        self._reading = False  # a task is in a direct read
        # Whether the peer reads batches (both said so: see _protocol); the messages of the
        # last batch read wait in ``_unpacked`` for ``_next``.
        self.batches = False
        self._unpacked: deque[bytes] = deque()
        self.half_close_ends = True  # False for a plain gRPC client's stream (server side)
        self.read_done: asyncio.Future[None] = self._loop.create_future()
        self.on_close: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    # -- reading --------------------------------------------------------------------------------
    async def _next(self) -> bytes | None:
        """One message from grpc, or None when nothing more comes (the end is recorded)."""
        if self._unpacked:
            return self._unpacked.popleft()
        try:
            msg = await self._read()
        except asyncio.CancelledError:
            self._read_cancelled()
            raise
        except Exception as exc:
            self._read_failed(exc)
            return None
        if msg is _EOF:
            self._read_eof()
            return None
        if self.batches and msg.startswith(BATCH_MARKER):
            return self._unbatch(msg)
        return msg  # type: ignore[no-any-return]

    def _unbatch(self, msg: bytes) -> bytes | None:
        """The first message of a batch (the others wait in ``_unpacked``), or None when it
        is garbled (the end is recorded: nothing of it is delivered)."""
        try:
            items = unpack_batch(msg, self.url)
        except IpcwireError as exc:
            self.ended(exc)
            return None
        self._unpacked.extend(items[1:])
        return items[0]

    def _read_cancelled(self) -> None:
        # grpc.aio cancels the RPC with the read: nothing more comes either way.
        self.ended(ChannelBroken(f"{self.url}: the read was cancelled", endpoint=self.url))

    def _read_failed(self, exc: Exception) -> None:
        end: IpcwireError
        if isinstance(exc, grpc.aio.AioRpcError):
            end = error_from_status(exc.code(), exc.details(), self.url, doing="receiving")
            if exc.code() == grpc.StatusCode.CANCELLED and not self._client:
                end = ChannelBroken(f"the client of {self.url} went away", endpoint=self.url)
            end.__cause__ = exc
        else:  # grpc.aio raises plain errors once the RPC is over
            end = ChannelBroken(f"{self.url} broke: {exc!r}", endpoint=self.url)
        self.ended(end)

    def _read_eof(self) -> None:
        end = EndOfChannel(f"{self.url} closed the channel", endpoint=self.url)
        # A plain client's half-close leaves the server free to answer; anything else ends it.
        self.ended(end, rpc_over=self._client or self.half_close_ends)

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
    # One write at a time (grpc.aio allows no more): ``_writing`` says a task holds the turn;
    # the others wait in ``_write_waiters`` (FIFO) and are handed the turn one by one. A plain
    # flag instead of an asyncio.Lock, because the lock's acquire and release were most of
    # what an uncontended send() cost beyond grpc.aio's own write.
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._raw and type(obj) is bytes and len(obj) <= self.send_limit:
            data = obj
        else:
            data = encode(self._codec, obj, self.send_limit, self.url)
        wire = data
        if self.batches and data.startswith(BATCH_MARKER):
            marker_check(data, self.send_limit, self.url)
            wire = pack_batch([data])
        if timeout is None and not self._writing and not self._closed and self._broken is None:
            self._writing = True  # the usual case: nobody else is writing; no timer
            try:
                await self._write(wire)
            except Exception as exc:
                raise self._send_error(exc, None)  # noqa: B904 - its cause is set
            finally:
                self._next_writer()
            self._sent += 1
            self._bytes_sent += len(data)
            return
        await self._send([data], timeout)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        items = [encode(self._codec, o, self.send_limit, self.url) for o in objs]
        if self.batches:
            for d in items:
                if d.startswith(BATCH_MARKER):
                    marker_check(d, self.send_limit, self.url)
        if items:
            await self._send(items, timeout)

    async def _send(self, items: list[bytes], timeout: float | None) -> None:
        self._check_send()
        try:
            if timeout is None:
                await self._write_turn(items)
            else:
                async with asyncio.timeout(timeout):
                    await self._write_turn(items)
        except Exception as exc:
            raise self._send_error(exc, timeout)  # noqa: B904 - its cause is set

    def _send_error(self, exc: Exception, timeout: float | None) -> Exception:
        """What a send that failed with ``exc`` raises (its cause set)."""
        err: Exception
        cause: Exception | None = None
        if isinstance(exc, IpcwireError):
            return exc
        if isinstance(exc, TimeoutError):
            self._broken = ChannelBroken(
                f"an earlier send to {self.url} timed out and cancelled the stream",
                endpoint=self.url,
            )
            err = Timeout(
                f"send to {self.url} did not complete within {timeout} s (the peer is not "
                f"reading); gRPC cancels the stream then, so the channel is broken",
                endpoint=self.url,
            )
        elif self._closed:
            err = ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        elif isinstance(exc, (grpc.aio.AioRpcError, asyncio.InvalidStateError, _UsageError)):
            if self._broken is None:
                self._broken = ChannelBroken(f"{self.url} broke: {exc}", endpoint=self.url)
            err, cause = self._broken, exc
        else:  # grpc.aio: ExecuteBatchError and friends after the end
            err = ChannelBroken(f"{self.url} broke while sending: {exc!r}", endpoint=self.url)
            cause = exc
        err.__cause__ = cause  # as ``raise err from cause`` (None: from None)
        err.__suppress_context__ = True
        return err

    async def _write_turn(self, items: list[bytes]) -> None:
        if self._writing:
            await self._wait_turn()
        else:
            self._writing = True
        try:
            await self._write_all(items)
        finally:
            self._next_writer()

    async def _wait_turn(self) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        self._write_waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._next_writer()  # handed the turn, then cancelled: pass it on
            else:
                try:
                    self._write_waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def _next_writer(self) -> None:
        """The write is over: hand the turn to the first sender still waiting, or free it."""
        waiters = self._write_waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)  # ``_writing`` stays set: the turn is handed over
                return
        self._writing = False

    async def _write_all(self, items: list[bytes]) -> None:
        write = self._write
        if self.batches:  # what goes together goes in one gRPC message
            for wire, count, size in plan_batches(items, self.send_limit):
                self._check_send()
                await write(wire)
                self._sent += count
                self._bytes_sent += size
            return
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
        if (
            timeout is None
            and self._reader is None  # so the inbox is empty: only the reader task fills it
            and not self._reading
            and self._end is None
            and not self._closed
            and not self._unpacked
        ):
            # The usual case, inlined (this is most of what a receiving loop costs beyond
            # grpc.aio's own read): one direct read, no task, no timer.
            self._reading = True
            try:
                msg = await self._read()
            except asyncio.CancelledError:
                self._read_cancelled()
                raise
            except Exception as exc:
                self._read_failed(exc)
                msg = None
            finally:
                self._reading = False
            if self.batches and type(msg) is bytes and msg.startswith(BATCH_MARKER):
                msg = self._unbatch(msg)
            if msg is not None and msg is not _EOF and not self._closed:
                self._received += 1
                self._bytes_received += len(msg)
                return msg if self._raw else self._codec.decode(memoryview(msg))
            if msg is _EOF:
                self._read_eof()
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            assert self._end is not None
            raise self._end
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
            return [await self.recv()]
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


class AioOneShot(OneShotCore, AioChannel):
    """The server's channel for one unary call (asyncio): one message in, one reply out."""

    def __init__(
        self, url: str, codec: Codec, request: bytes, peer: PeerInfo | None, send_limit: int
    ) -> None:
        super().__init__(url, codec, request, peer, send_limit)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _signal(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        self._reply(obj)

    async def recv(self, *, timeout: float | None = None) -> Any:
        return self._take()

    async def aclose(self) -> None:
        self.close()
