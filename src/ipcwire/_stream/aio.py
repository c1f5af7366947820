"""The asyncio channel over a stream transport.

A :class:`asyncio.BufferedProtocol` reads straight into the shared decoder's buffer, so the
blocking and asyncio drivers run the same I/O-free framing. Flow control both ways:

* sending waits (``drain``) while the transport's write buffer is over its high-water mark;
* receiving pauses the transport when undelivered messages exceed ``_HIGH_WATER`` bytes and
  resumes when the application has taken them, so a slow reader slows the writer instead of
  growing memory.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

from ipcwire._core.ending import end_error, error_reason, exit_reason
from ipcwire._core.framing import LengthPrefixDecoder, NdjsonDecoder, goodbye_frame
from ipcwire._core.handshake import (
    refusal,
)
from ipcwire._core.wire import WireFormat
from ipcwire._oserror import gave_up, translate
from ipcwire._stream import native
from ipcwire._stream.after_end import fresh, send_error_after_end
from ipcwire._stream.transport import forked_error, watch_fork
from ipcwire.aio._timeouts import within
from ipcwire.aio._without_loop import closable_socket, end_socket, handed_to_loop, not_this_loop
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import ChannelStatistics, PeerInfo, closed_error
from ipcwire.errors import (
    ChannelBroken,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
    Timeout,
)

__all__ = ["AioStreamChannel"]

_HIGH_WATER: Final = 4 * 1024 * 1024  # undelivered bytes before reading pauses


class _Raise:
    """A queued error, raised by ``recv`` in order with the messages around it."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class AioStreamChannel(AioChannel):
    """A channel over an asyncio stream transport."""

    def __init__(
        self,
        url: str,
        wire: WireFormat,
        *,
        peer: PeerInfo | None = None,
        decoder: LengthPrefixDecoder | NdjsonDecoder | None = None,
    ) -> None:
        self.url = url
        self._wire = wire
        self._pack = wire.packer
        self._decode = wire.decode
        self._decoder = decoder if decoder is not None else wire.decoder()
        # Raw bytes with length framing: frames parsed in C when the extension is built
        # (FrameReceiver.take; see _stream/native.py), else by the decoder in Python.
        self._take: Any = None
        receiver = native.FRAME_RECEIVER
        if receiver is not None and wire.framing == "length" and wire.is_raw:
            self._take = receiver(-1, self._decoder).take
        self._peer = peer
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._queue: deque[Any] = deque()
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drainers: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._read_paused = False
        self._closed = False
        self._reason = ""  # the goodbye's: "" for a clean close (see _aclose_after)
        self._end: IpcwireError | None = None  # set when the connection ended
        self._half_open = False  # the peer sent end-of-stream but may still read our replies
        # An NDJSON client without a handshake: the first line may be the server's refusal.
        self.refusal_possible = False
        self._lost: asyncio.Future[None] = self._loop.create_future()
        _open.add(self)  # told the end at exit, if its loop no longer runs (_close_at_exit)
        # In a forked child, the copy of a connection the parent opened refuses every use
        # (_after_fork; a socket's only: pipe channels may be handed to a child).
        self._owner = os.getpid()
        self._forked = False
        watch_fork(self)
        self._sent = 0
        self._received = 0
        self._bytes_sent = 0
        self._bytes_received = 0

    # -- sending ----------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = self._pack(obj)
        self._write(data, 1)
        if self._write_paused:
            await self._drain(timeout)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        items = objs if isinstance(objs, list | tuple) else list(objs)
        if items:
            self._write(self._wire.pack_many(items), len(items))
            if self._write_paused:
                await self._drain(timeout)

    def _write(self, data: Any, count: int) -> None:
        if self._closed:
            raise closed_error(self)
        if self._forked:
            raise forked_error(self.url, self._owner)
        t = self._transport
        if self._end is not None or t is None or t.is_closing():
            t = self._check_writable(t)
        try:
            if type(data) is tuple:
                t.writelines(data)
                self._bytes_sent += len(data[0]) + memoryview(data[1]).nbytes
            else:
                t.write(data)
                self._bytes_sent += len(data)
        except RuntimeError as exc:
            # uvloop's transport of a loop that ended ("the handler is closed"), which does
            # not say is_closing(): the channel belongs to that loop
            wrong = not_this_loop(self._loop, self.url)
            if wrong is not None:
                raise wrong from exc
            raise
        if self._half_open and t.is_closing():
            # after the peer's end-of-stream, a write that failed at once means it is gone
            raise ChannelBroken(
                f"cannot send to {self.url}: it closed its end and no longer reads",
                endpoint=self.url,
            )
        self._sent += count

    def _check_writable(self, t: asyncio.Transport | None) -> asyncio.Transport:
        """``t``, if a send can go on after the peer's end (a half-close); else raise (also
        without an open transport)."""
        end = self._end
        if end is not None:
            # The peer reads nothing more: every send says so, in the blocking API's words
            # (a TCP transport would take one more write without an error, and lose it).
            gone = send_error_after_end(end, self._decoder, self.url)
            if gone is not None:
                raise gone
        if (end is not None and not self._half_open) or t is None or t.is_closing():
            raise ChannelBroken(
                f"cannot send to {self.url}: the connection is gone ({end})",
                endpoint=self.url,
            )
        return t

    async def _drain(self, timeout: float | None) -> None:
        if (wrong := not_this_loop(self._loop, self.url)) is not None:
            raise wrong
        fut = self._loop.create_future()
        self._drainers.append(fut)
        try:
            if timeout is None:
                await fut
            else:
                async with within(timeout):
                    await fut
        except TimeoutError:
            raise Timeout(
                f"{self.url} is not reading: the message is queued but the write buffer "
                f"stayed full for {timeout} s",
                endpoint=self.url,
            ) from None
        finally:
            if fut in self._drainers:
                self._drainers.remove(fut)

    # -- receiving --------------------------------------------------------------------------
    async def recv(self, *, timeout: float | None = None) -> Any:
        if self._forked and not self._closed:
            raise forked_error(self.url, self._owner)
        q = self._queue
        if q and not self._closed:
            item = q.popleft()
            if not q:
                self._drained()
            if type(item) is _Raise:
                self._raise(item)
            self._received += 1
            return item
        return await self._wait_recv(timeout)

    @staticmethod
    def _raise(item: _Raise) -> None:
        """Raise a queued error, keeping no reference to it in this frame (the traceback
        would hold the frame, the frame the error: a cycle that kept the channel alive)."""
        exc = item.exc
        item.exc = None  # type: ignore[assignment]
        try:
            raise exc
        finally:
            del exc

    async def _wait_recv(self, timeout: float | None) -> Any:
        q = self._queue
        while True:
            if self._closed:
                raise closed_error(self)
            if q:
                # what the wake-up delivered: taken here, without another coroutine
                item = q.popleft()
                if not q:
                    self._drained()
                if type(item) is _Raise:
                    self._raise(item)
                self._received += 1
                return item
            if self._end is not None:
                raise fresh(self._end)  # (not the kept object: see fresh)
            if timeout == 0:
                raise Timeout(f"no message from {self.url} yet", endpoint=self.url)
            if self._waiter is not None:
                raise LocalProtocolError(
                    f"another task is already receiving on {self.url}; receive from one task "
                    f"(and fan out with a queue), or open one channel per task"
                )
            if (wrong := not_this_loop(self._loop, self.url)) is not None:
                raise wrong
            fut = self._waiter = self._loop.create_future()
            try:
                if timeout is None:
                    await fut
                else:
                    async with within(timeout):
                        await fut
            except TimeoutError:
                raise Timeout(
                    f"no message from {self.url} within {timeout} s", endpoint=self.url
                ) from None
            finally:
                self._waiter = None

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        out = [await self.recv(timeout=timeout)]
        q = self._queue
        while q and (max_messages is None or len(out) < max_messages):
            if type(q[0]) is _Raise:
                break
            out.append(q.popleft())
        self._received += len(out) - 1
        if not q:
            self._drained()
        return out

    def _drained(self) -> None:
        self._queued_bytes = 0
        if self._read_paused and self._transport is not None and not self._closed:
            self._read_paused = False
            self._transport.resume_reading()

    # -- called by the protocol -------------------------------------------------------------
    def _deliver(self) -> None:
        dec = self._decoder
        decode = self._decode
        q = self._queue
        n = 0
        take = self._take
        if take is not None:
            while (m := take()) is not None:
                n += len(m)
                q.append(m)
        while True:
            try:
                frame = dec.next_frame()
            except FrameTooLarge as exc:
                q.append(_Raise(exc))
                continue
            if frame is None:
                break
            size = len(frame)
            n += size
            try:
                q.append(decode(frame))
            except Exception as exc:  # a codec's own error too: raised in its place, as blocking
                q.append(_Raise(exc))
        if n:
            self._bytes_received += n
            self._queued_bytes += n
        if dec.ended is not None and self._end is None:
            # the peer's goodbye: the end, after what came before it (it may still read)
            self._end = end_error(dec, self.url)
            self._half_open = True
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)
        if q and self.refusal_possible:
            self.refusal_possible = False
            err = refusal(q[0], self.url) if type(q[0]) is not _Raise else None
            if err is not None:
                q[0] = _Raise(err)
        if q:
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)
            if self._queued_bytes > _HIGH_WATER and not self._read_paused:
                assert self._transport is not None
                self._read_paused = True
                self._transport.pause_reading()

    def _peer_eof(self) -> None:
        """The peer half-closed: what it sent is all there is, but it may still read."""
        if self._end is None:
            self._end = self._eof_error()
            self._half_open = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _eof_error(self) -> IpcwireError:
        return end_error(self._decoder, self.url)

    def _connection_lost(self, exc: Exception | None) -> None:
        self._half_open = False
        if self._end is None:
            if exc is not None:
                err = (
                    # (TCP gave the peer up: the blocking channel's words, _os_error there)
                    gave_up(exc, self.url, "receiving from")
                    or translate(exc, self.url, "receiving from")
                    if isinstance(exc, OSError)
                    else (ChannelBroken(f"{self.url} broke: {exc}", endpoint=self.url))
                )
                err.__cause__ = exc
                self._end = err
            else:
                self._end = self._eof_error()
        self._wake_all(ChannelBroken(f"{self.url} is gone", endpoint=self.url))
        if not self._lost.done():
            self._lost.set_result(None)
        self._decoder.release()  # nothing more arrives: the receive buffer goes now

    def _wake_all(self, drain_error: IpcwireError) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        for fut in self._drainers:
            if not fut.done():
                fut.set_exception(drain_error)
        self._drainers.clear()

    def _pause_writing(self) -> None:
        self._write_paused = True

    def _resume_writing(self) -> None:
        self._write_paused = False
        for fut in self._drainers:
            if not fut.done():
                fut.set_result(None)
        self._drainers.clear()

    # -- the rest ---------------------------------------------------------------------------
    def _hand_close_to_loop(self) -> bool:
        """``close()`` from another thread than the running loop's is handed to the loop
        (:func:`~ipcwire.aio._without_loop.handed_to_loop`: before, a waiting ``recv`` saw
        ``ChannelClosed`` only at its timeout or by luck, on uvloop ``Timeout``, and the
        transport's close from there could raise "Event loop is closed" in that thread);
        True if it was. Not in a forked copy."""
        return (
            not self._closed
            and os.getpid() == self._owner
            and handed_to_loop(self._loop, self.close)
        )

    def close(self) -> None:
        if self._closed or self._hand_close_to_loop():
            return
        self._closed = True
        _open.discard(self)
        if self._forked:
            # The child's copy: close its descriptor only. The transport's close would
            # unregister it from the loop's epoll, which the child shares with the parent,
            # and a goodbye would end the parent's channel.
            t, self._transport = self._transport, None
            sock = None if t is None else closable_socket(t.get_extra_info("socket"))
            if sock is not None:
                sock.close()
            return
        if self._loop.is_closed():
            self._close_without_loop()
            return
        self._wake_all(closed_error(self))
        self._queue.clear()  # (recv raises ChannelClosed from now on)
        t = self._transport
        if t is not None:
            if self._decoder.goodbye and not t.is_closing():
                t.write(goodbye_frame(self._reason))  # after every message sent: written
            t.close()
        elif not self._lost.done():
            self._lost.set_result(None)

    def _after_fork(self) -> None:
        """In a child this process forked: a socket channel's copy refuses every use
        (``forked_error``) and says no goodbye at exit; a pipe's is left as it is."""
        t = self._transport
        if t is None or t.get_extra_info("socket") is None:
            return
        self._forked = True
        _open.discard(self)
        self.__dict__.pop("_ipcwire_turns", None)  # (a parent task may have held it)

    def _close_without_loop(self) -> None:
        """``close()`` after the channel's event loop has ended (the channel outlived
        ``asyncio.run()``): the loop can no longer run the transport's close, and its waiters
        ended with it. The socket is closed here: the goodbye first if it can go now, then a
        shutdown, so the peer sees the end at once
        (:func:`ipcwire.aio._without_loop.end_socket`)."""
        t, self._transport = self._transport, None
        self._drainers.clear()
        self._waiter = None
        if t is not None:
            self._release_without_loop(t)

    def _release_without_loop(self, t: asyncio.Transport) -> None:
        """Close ``t``'s socket without the loop (see :meth:`_close_without_loop`)."""
        reason = self._reason
        end_socket(t, (lambda: goodbye_frame(reason)) if self._decoder.goodbye else None)

    async def _aclose_after(self, exc: BaseException | None) -> None:
        self._reason = error_reason(exc)
        await self.aclose()

    async def aclose(self) -> None:
        self.close()
        if not_this_loop(self._loop, self.url) is not None:
            return  # closed; its loop's future cannot be awaited here (another loop's)
        if not self._lost.done():
            try:
                async with within(2.0):
                    await asyncio.shield(self._lost)
            except TimeoutError:
                if self._transport is not None:
                    self._transport.abort()

    @property
    def wire(self) -> WireFormat:
        """The codec and framing in use."""
        return self._wire

    def statistics(self) -> ChannelStatistics:
        framing = 4 if self._wire.framing == "length" else 1  # a header, or a newline
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent - framing * self._sent,
            bytes_received=self._bytes_received,
            buffered_bytes=self._decoder.buffered + self._queued_bytes,
        )


_open: weakref.WeakSet[AioStreamChannel] = weakref.WeakSet()


def _close_at_exit() -> None:
    """Say goodbye, as the blocking channels do (``_stream/blocking.py``), on the channels a
    program leaves open at exit whose loop no longer runs: one that ``asyncio.run()`` closed,
    or one stopped and never closed (ipykernel's, a ``run_until_complete`` script's), whose
    ``serve()`` handlers never ran their ``async with`` exits. Before, the process's end
    closed the sockets with no goodbye, and each client was told its server had crashed.
    A loop still running (in another thread) is left alone: its channels end with it; so
    are channels over pipes (spawn, fifo: their own exit handling ends them)."""
    reason = exit_reason()
    for ch in list(_open):
        loop = ch._loop
        if ch._closed or (loop.is_running() and not loop.is_closed()):
            continue
        t = ch._transport
        if t is None or t.get_extra_info("socket") is None:
            continue
        if not ch._reason:
            ch._reason = reason
        ch._closed = True
        _open.discard(ch)
        try:
            ch._close_without_loop()
        except Exception:  # noqa: S112 - one channel's socket must not keep the others open
            continue


atexit.register(_close_at_exit)
