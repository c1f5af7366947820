"""asyncio channels over ``grpc.aio``: one class for both ends of a stream, and the server's
channel for one unary call. ``send`` queues, and waits only while the queue is full (the
peer is not reading)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Final

from ipcwire import _pid
from ipcwire._core.codecs import BytesCodec, Codec, encode_message
from ipcwire._core.ending import error_reason
from ipcwire._core.wire import checked_decode, decode_taken
from ipcwire._deadline import limit
from ipcwire.aio._detach import Detachable, Interrupted
from ipcwire.aio._loop_end import at_loop_end
from ipcwire.aio._timeouts import within
from ipcwire.aio._without_loop import handed_to_loop, not_this_loop
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import ChannelStatistics, PeerInfo, closed_error
from ipcwire.errors import (
    ChannelBroken,
    EndOfChannel,
    IpcwireError,
    LocalProtocolError,
    Timeout,
)
from ipcwire.grpc._channel import (
    ACLOSE_WAIT,
    HIGH_WATER,
    HIGH_WATER_MESSAGES,
    LINGER,
    LOW_WATER,
    LOW_WATER_MESSAGES,
    SEND_SLACK,
    OneShotCore,
    backlog,
    forked,
)
from ipcwire.grpc._grpcio import grpc
from ipcwire.grpc._protocol import (
    BATCH_MARKER,
    CANCEL_GRACE,
    MARKER_BYTE,
    client_cancelled,
    error_from_status,
    lost_client,
    marker_check,
    pack_batch,
    plan_batches,
    unpack_batch,
)

__all__ = ["AioOneShot", "AioStream", "task_cancelled"]

_EOF: Any = grpc.aio.EOF
_BYE: Final = object()  # _unbatch() read the client's goodbye
_CLOSING: set[asyncio.Task[None]] = set()  # closes under way (close() does not wait)
log = logging.getLogger("ipcwire")
_UsageError: Any = grpc.aio.UsageError
_running_loop = asyncio.get_running_loop


def task_cancelled() -> bool:
    """Whether the running task is being cancelled. grpc.aio's read also raises
    CancelledError when the call was cancelled (as close() does, after a moment, to a call
    a task is still reading): that is no cancellation of the reader's task."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class AioStream(AioChannel):
    """One end of an ipcwire gRPC stream (asyncio); see docs/mechanisms/grpc.md.

    A cancelled grpc.aio read cancels the whole RPC, so ``recv()`` never lets a cancellation
    reach grpc's read: it reads in its own task through :class:`Detachable` (no extra pass
    of the event loop per message), and when it is cancelled, times out, or close() wakes
    it, the read it started goes on in a reader task, which from then on moves what arrives
    into an inbox (pausing while ``HIGH_WATER`` bytes wait there) and ``recv`` waits on that
    (``recv(timeout=0)`` starts the reader too: a poll must find what came meanwhile). So a
    cancelled or timed-out ``recv`` and a close() leave the RPC as it was, and lose nothing.
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
        self._codec_decode = checked_decode(codec, url)  # RemoteProtocolError on failure
        # ipcwire's own raw codec: bytes as they are (a subclass may encode or decode its way)
        self._raw = type(codec) is BytesCodec
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
        self._pending: list[bytes] = []  # queued by send(), not yet taken by the writer
        self._unwritten = self._unwritten_n = 0  # queued bytes and messages not yet written
        self._writer: asyncio.Task[None] | None = None
        self._room_waiters: list[asyncio.Future[None]] = []
        self._busy = False  # a task writes in send() itself (see "sending")
        self._sent_last = False  # the last thing done was a send, not a receive
        self._end: IpcwireError | None = None
        self._broken: IpcwireError | None = None
        self._closed = False
        self._reader: asyncio.Task[None] | None = None
        self._direct: Detachable[Any] | None = None  # the read a recv() waits on in its task
        # Server side: whether the client ends its stream with the goodbye, and whether it
        # came (see _protocol).
        self.expect_bye = False
        self._bye = False
        # Whether the peer reads batches (both said so: see _protocol); the messages of the
        # last batch read wait in ``_unpacked`` for ``_next``.
        self.batches = False
        self._unpacked: deque[bytes] = deque()
        self.half_close_ends = True  # False for a plain gRPC client's stream (server side)
        # Server side: done when the RPC is over (the listener's handler sets it)
        self.rpc_over: asyncio.Future[None] | None = None
        self.read_done: asyncio.Future[None] = self._loop.create_future()
        self.on_close: Callable[[], Coroutine[Any, Any, None]] | None = None
        # What close() can still release once the loop has ended (the client's call.cancel)
        self.on_close_without_loop: Callable[[], object] | None = None
        self.fail_reason = ""  # why this side ends the channel after an error ("": cleanly)
        self._closing: asyncio.Task[None] | None = None
        self._owner = os.getpid()
        self._open_at_loop_end: asyncio.Future[None] | None = None  # (watch_loop_end)
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    # -- reading --------------------------------------------------------------------------------
    async def _next(
        self, first: Awaitable[Any] | None = None, *, direct: bool = False
    ) -> bytes | None:
        """One message from grpc, or None when nothing more comes (the end is recorded, or,
        ``direct``, the reader task records it). ``first``: a read already under way (one a
        cancelled ``recv`` handed over). ``direct``: in a recv()'s own task (see the class);
        CancelledError and Interrupted then leave the read to the reader task."""
        if self._unpacked:
            return self._unpacked.popleft()
        while True:
            detachable = None
            if first is not None:
                aw, first = first, None
            elif direct:
                aw = detachable = self._direct = Detachable(self._read(), self._hand_over)
            else:
                aw = self._read()
            try:
                msg = await aw
            except asyncio.CancelledError:
                if detachable is not None and detachable.detached:
                    raise  # this task's cancellation: the read goes on in the reader task
                self._read_cancelled()
                if task_cancelled():
                    raise
                return None  # close() cancelled the call under us: ChannelClosed
            except Interrupted:
                raise
            except Exception as exc:
                self._read_failed(exc)
                return None
            finally:
                if detachable is not None:
                    self._direct = None
            if msg is _EOF:
                if direct:  # the end's grace (_eof) is waited in the reader task
                    self._reader = self._loop.create_task(self._eof())
                    return None
                await self._eof()
                return None
            if not (self.batches and msg.startswith(BATCH_MARKER)):
                return msg  # type: ignore[no-any-return]
            one = self._unbatch(msg)
            if one is not _BYE:
                return one  # type: ignore[return-value]

    def _unbatch(self, msg: bytes) -> bytes | object | None:
        """The first message of a batch (the others wait in ``_unpacked``); None when it is
        garbled (the end is recorded: nothing of it is delivered); ``_BYE`` for the goodbye
        (an empty batch, _protocol: the end of the stream comes next)."""
        try:
            items = unpack_batch(msg, self.url)
        except IpcwireError as exc:
            self.ended(exc)
            return None
        if not items:
            self._bye = True
            return _BYE
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
                if self.half_close_ends:
                    end = ChannelBroken(f"the client of {self.url} went away", endpoint=self.url)
                else:  # a plain client
                    end = client_cancelled(self.url)
            end.__cause__ = exc
        else:  # grpc.aio raises plain errors once the RPC is over
            end = ChannelBroken(f"{self.url} broke: {exc!r}", endpoint=self.url)
        self.ended(end)

    async def _eof(self) -> None:
        """The stream ended. A plain client's (server side): half-closed, or cancelled?
        grpc.aio ends the read the same way for both, and cancels the RPC (the listener's
        handler, which then records the cancel) a moment later: wait for that
        (``CANCEL_GRACE``) before taking the end as clean. A half-closed RPC goes on (the
        server may still answer), so the wait is the whole grace then."""
        over = self.rpc_over
        if over is not None and not self.half_close_ends and self._end is None:
            await asyncio.wait([over], timeout=CANCEL_GRACE)
        self._read_eof()

    def _read_eof(self) -> None:
        end: IpcwireError = EndOfChannel(f"{self.url} closed the channel", endpoint=self.url)
        if self.expect_bye and not self._bye:
            end = lost_client(self.url)
        # A plain client's half-close leaves the server free to answer; anything else ends it.
        self.ended(end, rpc_over=self._client or self.half_close_ends)

    def _hand_over(self, read: Awaitable[Any]) -> None:
        """A recv() reading in its task was cancelled or woken: its read goes on here."""
        self._reader = self._loop.create_task(self._read_all(read))

    async def _read_all(self, first: Awaitable[Any] | None = None) -> None:
        inbox = self._inbox
        while True:
            msg = await self._next(first)
            first = None
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
            # grpc may hold the write in flight until the RPC is over (long after, if the
            # peer never reads): senders waiting for room, and close(), learn it now.
            self._wake(self._room_waiters)
        if rpc_over:
            self._rpc_ended()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self._direct is not None:
            self._direct.interrupt()
        if not self.read_done.done():
            self.read_done.set_result(None)

    def call_done(self, code: Any = None, details: str | None = None) -> None:
        """The RPC is over (client side), with status ``code`` (a ``grpc.StatusCode``, None
        if unknown): sending fails, with the blocking driver's words (its ``_call_ended``);
        what arrived can still be read."""
        if self._broken is None:
            err: IpcwireError | None = None
            if getattr(code, "name", "OK") != "OK":  # (before, the status was not looked at)
                err = error_from_status(code, details, self.url, doing="sending")
            if not isinstance(err, ChannelBroken):
                err = ChannelBroken(
                    f"cannot send to {self.url}: the server ended the channel", endpoint=self.url
                )
            self._broken = err
            self._wake(self._room_waiters)
        self._rpc_ended()

    def _rpc_ended(self) -> None:
        """The RPC is over: the loop's end can lose nothing more (watch_loop_end)."""
        f = self._open_at_loop_end
        if f is not None and not f.done():
            f.set_result(None)

    # -- sending --------------------------------------------------------------------------------
    # grpc.aio allows one write at a time, and each costs tens of microseconds. A send() that
    # follows a receive, with nothing else being written and no timeout (a request or a reply),
    # writes at once in the caller's task: what bare grpc.aio costs. Any other send() queues,
    # as the blocking driver's does, and returns at once unless HIGH_WATER bytes or
    # HIGH_WATER_MESSAGES messages wait to be written; one writer task (started when something
    # is queued, gone when all is written) hands the queue to grpc.aio, packing what queued up
    # during a write into one batch when the peer reads batches (see _protocol). So a task that
    # sends message after message is not held to one gRPC message each.
    def _encode(self, obj: Any) -> bytes:
        """``obj``'s bytes, checked against the peer's limit (FrameTooLarge: nothing sent)."""
        if self._raw and type(obj) is bytes and len(obj) <= self.send_limit:
            data = obj
        else:
            data = encode_message(self._codec, obj, self.send_limit, self.url)
        if self.batches and data.startswith(BATCH_MARKER):
            marker_check(data, self.send_limit, self.url)
        return data

    def _can_write_now(self) -> bool:
        """Nothing is being written and the queue is under its bounds."""
        return (
            self._writer is None
            and not self._busy
            and self._unwritten <= HIGH_WATER
            and self._unwritten_n < HIGH_WATER_MESSAGES
        )

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._owner != _pid.current or _running_loop() is not self._loop:
            self._check_place()
        if (
            type(obj) is bytes
            and self._raw
            and len(obj) <= self.send_limit
            and not (self.batches and obj[:1] == MARKER_BYTE and obj.startswith(BATCH_MARKER))
        ):
            data = wire = obj  # (what _encode gives, in this frame)
        else:
            data = self._encode(obj)
            wire = None  # (packed below if it is written at once)
        if self._closed or self._broken is not None:
            self._check_send()
        if self._unwritten > HIGH_WATER or self._unwritten_n >= HIGH_WATER_MESSAGES:
            await self._wait_for_room(timeout)
        elif timeout is None and not self._sent_last and self._writer is None and not self._busy:
            # Written at once in this task (see above); sends meanwhile queue behind it. In
            # this frame, not a method of its own: one coroutine less per message.
            self._sent_last = self._busy = True
            n = len(data)
            self._unwritten += n
            self._unwritten_n += 1
            try:
                if wire is None:
                    batch = self.batches and data.startswith(BATCH_MARKER)
                    wire = pack_batch([data]) if batch else data
                await self._write(wire)
            except asyncio.CancelledError:
                # The caller was cancelled mid-write. grpc.aio's client cancels the RPC then;
                # its server goes on writing without us, and another write now would overlap
                # that one (grpc refuses it, and what was queued meanwhile would be lost
                # unseen). Either way the stream cannot go on: the next send() says so.
                if self._broken is None:
                    self._broken = ChannelBroken(
                        f"cannot send to {self.url}: a send() was cancelled while grpc wrote "
                        f"its message, which ends the stream",
                        endpoint=self.url,
                    )
                raise
            except Exception as exc:
                self._write_failed(exc)
                self._check_send()
                raise  # not reached: _write_failed broke the channel
            finally:
                self._busy = False
                self._unwritten -= n
                self._unwritten_n -= 1
                if self._pending and self._writer is None:
                    self._writer = self._loop.create_task(self._write_queued())
                if self._room_waiters:
                    self._wake(self._room_waiters)
            self._sent += 1
            self._bytes_sent += n
            return
        self._queue(data)

    def _check_place(self) -> None:
        """Raise if this is a child forked from the channel's process, or another event loop
        than the channel's (Closed wins over the latter). The fast paths look first."""
        if os.getpid() != self._owner:
            raise forked(self.url, self._owner)
        if (wrong := not_this_loop(self._loop, self.url)) is not None:
            raise closed_error(self) if self._closed else wrong

    def _queue(self, data: bytes) -> None:
        """Queue one message for the writer task (started if none runs)."""
        self._sent_last = True
        self._pending.append(data)
        self._unwritten += len(data)
        self._unwritten_n += 1
        self._sent += 1
        self._bytes_sent += len(data)
        if self._writer is None and not self._busy:
            self._writer = self._loop.create_task(self._write_queued())

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        self._check_place()
        items = [encode_message(self._codec, o, self.send_limit, self.url) for o in objs]
        if self.batches:
            for d in items:
                if d.startswith(BATCH_MARKER):
                    marker_check(d, self.send_limit, self.url)
        if not items:
            return
        self._check_send()
        if self._unwritten > HIGH_WATER or self._unwritten_n >= HIGH_WATER_MESSAGES:
            await self._wait_for_room(timeout)
        size = sum(len(d) for d in items)
        self._sent_last = True
        self._pending.extend(items)
        self._unwritten += size
        self._unwritten_n += len(items)
        self._sent += len(items)
        self._bytes_sent += size
        if self._writer is None and not self._busy:
            self._writer = self._loop.create_task(self._write_queued())

    async def _write_queued(self) -> None:
        """The writer task: write what is queued until nothing is, or the stream fails."""
        write = self._write
        try:
            while self._pending and self._broken is None:
                items, self._pending = self._pending, []
                if self.batches:
                    plan: Iterable[tuple[bytes, int, int]] = plan_batches(items, self.send_limit)
                else:
                    plan = ((d, 1, len(d)) for d in items)
                for wire, count, size in plan:
                    if self._broken is not None:
                        return
                    await write(wire)
                    self._unwritten -= size
                    self._unwritten_n -= count
                    if (
                        self._room_waiters
                        and self._unwritten <= HIGH_WATER - SEND_SLACK
                        and self._unwritten_n <= LOW_WATER_MESSAGES
                    ):
                        self._wake(self._room_waiters)
        except Exception as exc:
            self._write_failed(exc)
        finally:
            self._writer = None
            self._wake(self._room_waiters)

    def _write_failed(self, exc: Exception) -> None:
        """grpc.aio refused a write: the stream is over; queued messages are not sent."""
        if self._broken is not None:
            return
        if isinstance(exc, (grpc.aio.AioRpcError, asyncio.InvalidStateError, _UsageError)):
            err = ChannelBroken(f"{self.url} broke: {exc}", endpoint=self.url)
        else:  # grpc.aio: ExecuteBatchError and friends after the end
            err = ChannelBroken(f"{self.url} broke while sending: {exc!r}", endpoint=self.url)
        err.__cause__ = exc
        self._broken = err

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        for w in waiters:
            if not w.done():
                w.set_result(None)
        waiters.clear()

    async def _wait_for_room(self, timeout: float | None) -> None:
        """Return when the channel is open and the queue is under its bounds.

        Raises:
            ChannelClosed, ChannelBroken, Timeout: nothing was queued.
        """
        try:
            async with asyncio.timeout(limit(timeout, self.url)):  # (naming the channel)
                while self._unwritten > HIGH_WATER or self._unwritten_n >= HIGH_WATER_MESSAGES:
                    self._check_send()
                    fut = self._loop.create_future()
                    self._room_waiters.append(fut)
                    await fut
        except TimeoutError:
            raise Timeout(
                backlog(self.url, self._unwritten_n, self._unwritten), endpoint=self.url
            ) from None
        self._check_send()

    def _check_send(self) -> None:
        if self._closed:
            raise closed_error(self)
        if self._broken is not None:
            raise self._broken

    # -- receiving ------------------------------------------------------------------------------
    async def recv(self, *, timeout: float | None = None) -> Any:
        if self._inbox and not self._closed:
            return self._pop(1)[0]
        if (
            timeout is None
            and self._reader is None
            and self._direct is None
            and self._end is None
            and not self._closed
            and not self._unpacked
            and self._owner == _pid.current
            and _running_loop() is self._loop
        ):
            # The common case, in this frame (one coroutine per message, not four): read in
            # this task, as _wait() and _read_here() do; anything but a plain message, and
            # any failure, is recorded as they record it, and _wait() then says it.
            d = self._direct = Detachable(self._read(), self._hand_over)
            try:
                msg = await d
            except asyncio.CancelledError:
                if d.detached:
                    raise  # this task's cancellation: the read goes on in the reader task
                self._read_cancelled()
                if task_cancelled():
                    raise
                msg = None  # close() cancelled the call under us: ChannelClosed
            except Interrupted:
                msg = None  # close() or the end woke us: the read goes on in the reader task
            except Exception as exc:
                self._read_failed(exc)
                msg = None
            finally:
                self._direct = None
            if msg is not None:
                if msg is not _EOF and not (
                    self.batches and msg[:1] == MARKER_BYTE and msg.startswith(BATCH_MARKER)
                ):
                    if self._raw:
                        self._sent_last = False
                        self._received += 1
                        self._bytes_received += len(msg)
                        return msg
                    self._inbox.append(msg)
                    self._queued += len(msg)
                    return self._pop(1)[0]
                self._took(msg)
        await self._wait(timeout)
        return self._pop(1)[0]

    def _took(self, msg: Any) -> None:
        """The end, or a batch, that a read in recv()'s task took (see _next)."""
        if msg is _EOF:  # the end's grace (_eof) is waited in the reader task
            self._reader = self._loop.create_task(self._eof())
            return
        one = self._unbatch(msg)
        if isinstance(one, bytes):  # (not the goodbye, after which the end comes)
            self._inbox.append(one)
            self._queued += len(one)

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        if self._inbox and not self._closed:
            return self._pop(max_messages)
        await self._wait(timeout)
        return self._pop(max_messages)

    def _pop(self, limit: int | None) -> list[Any]:
        inbox = self._inbox
        raw = [inbox.popleft()]
        while inbox and (limit is None or len(raw) < limit):
            raw.append(inbox.popleft())
        n = len(raw[0]) if len(raw) == 1 else sum(len(m) for m in raw)
        self._queued -= n
        self._received += len(raw)
        self._sent_last = False
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

        def put_back(back: list[bytes]) -> None:
            n = sum(len(m) for m in back)
            inbox.extendleft(reversed(back))
            self._queued += n
            self._received -= len(back)
            self._bytes_received -= n

        return decode_taken(self._codec_decode, raw, put_back)

    async def _wait(self, timeout: float | None) -> None:
        self._check_place()
        if timeout == 0 and self._reader is None and self._direct is None and self._end is None:
            # (not while another task's recv() reads in its own task: a second grpc.aio read
            # of the stream alongside it lost messages, or broke the RPC)
            self._reader = self._loop.create_task(self._read_all())
        while True:
            if self._closed:
                raise closed_error(self)
            if self._inbox:
                return
            if self._unpacked:  # the rest of a batch a direct read took: already here
                self._inbox.extend(self._unpacked)
                self._queued += sum(len(m) for m in self._unpacked)
                self._unpacked.clear()
                return
            if self._end is not None:
                raise self._end
            if timeout == 0:
                raise Timeout(f"no message from {self.url} yet", endpoint=self.url)
            if self._waiter is not None or self._direct is not None:
                raise LocalProtocolError(
                    f"another task is already receiving on {self.url}; receive from one task",
                    endpoint=self.url,
                )
            if self._reader is None:
                await self._read_here(timeout)
                continue
            fut = self._waiter = self._loop.create_future()
            try:
                if timeout is None:
                    await fut
                else:
                    async with asyncio.timeout(limit(timeout, self.url)):
                        await fut
            except TimeoutError:
                raise Timeout(
                    f"no message from {self.url} within {timeout} s", endpoint=self.url
                ) from None
            finally:
                self._waiter = None

    async def _read_here(self, timeout: float | None) -> None:
        """Read in this task (see the class) into the inbox; or the end is recorded, or
        close() woke us (the caller's loop tells which)."""
        try:
            if timeout is None:
                msg = await self._next(direct=True)
            else:
                async with asyncio.timeout(limit(timeout, self.url)):
                    msg = await self._next(direct=True)
        except TimeoutError:
            raise Timeout(
                f"no message from {self.url} within {timeout} s", endpoint=self.url
            ) from None
        except Interrupted:
            return
        if msg is not None:
            self._inbox.append(msg)
            self._queued += len(msg)

    # -- closing --------------------------------------------------------------------------------
    def watch_loop_end(self) -> None:
        """Client side: say so when the event loop ends (``asyncio.run()`` returning) with
        this stream still open. The loop's end cancels every task, the writes under way with
        them, and grpc.aio cancels an RPC whose write is cancelled: what was queued, and what
        the server had not read, is lost. Nothing can run before that sweep (the blocking
        driver closes open clients at exit and delivers), so here the loss is at least not
        silent: a WARNING names the channel and the fix. Before, the server saw the client
        vanish (ChannelBroken) with 83 of 200 messages of 64 KiB never arriving, and nothing
        was said."""
        self._open_at_loop_end = at_loop_end(
            self._loop, f"ipcwire: warns if the loop ends with {self.url} open", self._lost
        )

    def _lost(self) -> None:
        """The loop is ending with this stream open (see watch_loop_end); not closed here:
        grpc.aio used during the loop's end can crash."""
        if os.getpid() == self._owner:  # (the sweep's other cancellations may close it first)
            log.warning(
                "the event loop ended with %s still open: %d messages sent were not yet "
                "written, and the server may not have read the last ones written; they "
                "are lost. Close it before the loop ends: await aclose(), or use "
                "'async with'",
                self.url,
                self._unwritten_n,
            )

    def close(self) -> None:
        if self._closed:
            return
        # another thread: the futures, the reads and the closing task are the loop's
        if os.getpid() == self._owner and handed_to_loop(self._loop, self.close):
            return
        self._closed = True
        if self._loop.is_closed():
            # The channel outlived its loop (asyncio.run() returned): nothing waits on it any
            # more, and the goodbye and the wait for the peer need the loop. Marked closed;
            # the client's call is cancelled (grpc.aio allows that without the loop).
            if self.on_close_without_loop is not None:
                try:
                    self.on_close_without_loop()
                except Exception:  # noqa: S110 - the call went with its loop: nothing to end
                    pass
            return
        for f in (self._waiter, self._resume, self._open_at_loop_end):
            if f is not None and not f.done():
                f.set_result(None)
        if self._direct is not None:
            self._direct.interrupt()
        self._wake(self._room_waiters)
        if self.on_close is not None:
            task = self._closing = self._loop.create_task(self._close_when_written(self.on_close))
            _CLOSING.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(_CLOSING.discard)

    async def _close_when_written(self, on_close: Callable[[], Awaitable[None]]) -> None:
        """What was sent before close() is written first (for at most LINGER seconds), unless
        the stream ends meanwhile: nothing more can be written then."""
        try:
            async with within(LINGER):
                while (self._writer is not None or self._busy) and self._broken is None:
                    # The writer task and a send() writing in its own task wake these as they
                    # go and when done; so does the end of the stream.
                    fut = self._loop.create_future()
                    self._room_waiters.append(fut)
                    await fut
        except TimeoutError:
            if self._writer is not None:
                self._writer.cancel()
        await on_close()

    async def _aclose_after(self, exc: BaseException | None) -> None:
        if not self._closed:  # (closed first: serve() ending it, a clean close, then cancelled)
            self.fail_reason = error_reason(exc)
        await self.aclose()

    async def aclose(self) -> None:
        self.close()
        if self._closing is not None:
            # (it waited for the whole LINGER, 60 s, on a peer that does not read; the task
            # goes on after this wait, and is not cancelled with it)
            await asyncio.wait([self._closing], timeout=ACLOSE_WAIT)

    def stop_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            self._sent,
            self._received,
            self._bytes_sent,
            self._bytes_received,
            self._queued + sum(len(m) for m in self._unpacked),  # and the rest of a batch
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

    async def _aclose_after(self, exc: BaseException | None) -> None:
        self._close_after(exc)

    async def aclose(self) -> None:
        self.close()
