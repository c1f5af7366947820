"""POSIX message queues, asyncio driver: the channel (:class:`AioMqChannel`); opening one and
the listener are in ``aio.py``. The queue descriptors go straight into the event loop
(``add_reader``/``add_writer``; mq descriptors are pollable on Linux), no thread per queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Final

from ipcwire._core.ending import error_reason
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import not_seconds
from ipcwire.aio._timeouts import within, within_at
from ipcwire.aio._without_loop import handed_to_loop, not_this_loop
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import closed_error
from ipcwire.errors import (
    IpcwireError,
    LocalProtocolError,
    Timeout,
)
from ipcwire.mq._channel import CLOSE_TIMEOUT, CLOSE_UNSEEN, ChannelCore
from ipcwire.mq._proto import EOF_PRIORITY, kernel_priority, pieces
from ipcwire.mq._queue import MessageQueue

__all__ = ["AioMqChannel", "wait_fd"]

log = logging.getLogger("ipcwire")

_MAX_ABSORB: Final = 1024  # messages read ahead while a send waits, to spot the peer's close


async def wait_fd(fd: int, *, write: bool, timeout: float | None) -> bool:
    """Wait until ``fd`` is readable (or writable); False on timeout."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        async with within(timeout):
            await fut
        return True
    except TimeoutError:
        return False
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


class AioMqChannel(ChannelCore, AioChannel):
    """One end of an mq channel, for asyncio (see :class:`ipcwire.mq.blocking.MqChannel`)."""

    def __init__(
        self,
        inbound: MessageQueue,
        outbound: MessageQueue,
        wire: WireFormat,
        url: str,
        *,
        peer_pid: int | None,
        pidfd: int | None,
        ends: int | None,
        tells: bool = False,
        life: str | None = None,
    ) -> None:
        super().__init__(
            inbound,
            outbound,
            wire,
            url,
            peer_pid=peer_pid,
            pidfd=pidfd,
            ends=ends,
            tells=tells,
            life=life,
        )
        self._loop = asyncio.get_running_loop()
        self._rwaiter: asyncio.Future[None] | None = None
        self._swaiters: list[asyncio.Future[None]] = []
        self._sending = False  # a message is going out in pieces, or senders wait in line
        self._reading = False  # add_reader on the inbound queue is active
        self._writing = False
        self._finished: asyncio.Future[None] = self._loop.create_future()
        # (weakly: the loop's readers must not keep a dropped channel from being collected)
        if pidfd is not None:
            self._loop.add_reader(pidfd, _weakly(self, AioMqChannel._peer_exited))
        self._watch_ends = ends is not None
        if ends is not None:
            self._loop.add_reader(ends, _weakly(self, AioMqChannel._peer_closing))
        self._owner = os.getpid()  # a forked process's copy tells the peer nothing

    # -- event-loop callbacks ---------------------------------------------------------------
    def _peer_exited(self) -> None:
        self._dead = True
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
        self._wake_all()

    def _peer_closing(self) -> None:
        """The end pipe: the peer closed (its messages before that are in the queue)."""
        self._peer_closed = True
        self._unwatch_ends()
        self._wake_all()

    def _unwatch_ends(self) -> None:
        if self._watch_ends and self._ends is not None:
            self._watch_ends = False
            self._loop.remove_reader(self._ends)

    def _wake_all(self) -> None:
        w = self._rwaiter
        if w is not None and not w.done():
            w.set_result(None)
        for f in self._swaiters:
            if not f.done():
                f.set_result(None)

    _on_eof = _wake_all  # the peer closed: wake every waiting send and recv

    def _readable(self) -> None:
        """Inbound has messages: wake the receiver, or (while a send waits) read ahead to
        see whether the peer closed."""
        w = self._rwaiter
        if w is not None:
            if not w.done():
                w.set_result(None)
            return
        try:
            if self._read_ahead(min(self._in.maxmsg, _MAX_ABSORB)):
                return
        except IpcwireError:
            pass
        self._stop_reading()  # read-ahead is full (or the peer closed): stop until recv

    def _writable(self) -> None:
        for f in self._swaiters:
            if not f.done():
                f.set_result(None)

    def _start_reading(self) -> None:
        if not self._reading and not self._closed:
            self._reading = True
            self._loop.add_reader(self._in.fileno(), self._readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._in.fileno())

    # -- sending ----------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None, priority: int = 0) -> None:
        """Send one message; ``priority`` 0 is normal, higher overtakes.

        Raises:
            ConfigurationError: a priority outside 0..USER_PRIORITY_MAX.
            And those of :meth:`ipcwire.aio.AioChannel.send`.
        """
        prio = 1 if priority == 0 else kernel_priority(priority)
        data = self._encode(obj)
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        if size > self._limit:
            raise self._too_large(size)
        self._check_send()
        if size < self._msgsize and not self._sending and self._out.try_send(data, prio):
            pass  # the fast path: room in the queue, nobody ahead of us
        else:
            await self._send_slow(data, prio, timeout)
        self._sent += 1
        self._bytes_sent += size

    async def _send_slow(self, data: Any, prio: int, timeout: float | None) -> None:
        deadline = None if timeout is None else self._loop.time() + timeout
        while self._sending:  # one message at a time: pieces must not interleave
            if not await self._wait_send(deadline):
                raise self._send_timeout(timeout)
            self._check_send()
        self._sending = True
        sent = 0  # pieces of this message in the queue
        try:
            for piece in pieces(data, self._msgsize):
                while True:
                    self._check_send()
                    if self._out.try_send(piece, prio):
                        sent += 1
                        break
                    if not await self._wait_send(deadline):
                        if sent == 0:
                            raise self._send_timeout(timeout)
                        raise self._part_way() from self._send_timeout(timeout)
        except BaseException:
            # Cancelled (or failed) after some pieces went: the next message's pieces would
            # be joined to them, so the channel can send no more (as after a part-way Timeout).
            if sent and self._send_broken is None:
                self._part_way()
            raise
        finally:
            self._sending = False
            self._writable()  # let the next sender in line try

    async def _wait_send(self, deadline: float | None) -> bool:
        if (wrong := not_this_loop(self._loop, self.url)) is not None:
            raise wrong
        fut = self._loop.create_future()
        self._swaiters.append(fut)
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._out.fileno(), self._writable)
        if self._rwaiter is None:
            self._start_reading()  # watch for the peer's close while we wait
        try:
            async with within_at(deadline):
                await fut
            return True
        except TimeoutError:
            return False
        finally:
            self._swaiters.remove(fut)
            if not self._swaiters and self._writing:
                self._writing = False
                if not self._closed:
                    self._loop.remove_writer(self._out.fileno())
            if not self._swaiters and self._rwaiter is None:
                self._stop_reading()

    # -- receiving --------------------------------------------------------------------------
    def _deliver(self, data: bytes) -> Any:
        # Decodes raw bytes too (a copy), unlike ChannelCore._deliver: with the blocking
        # driver's shortcut, single messages went faster but `ipcwire bench`'s batched
        # throughput here fell from ~0.9x raw to ~0.5x (measured twice); kept as it was.
        self._received += 1
        self._bytes_received += len(data)
        return self._decode(memoryview(data))

    async def recv(self, *, timeout: float | None = None) -> Any:
        data, _ = await self._next(timeout)
        return self._deliver(data)

    async def recv_with_priority(self, *, timeout: float | None = None) -> tuple[Any, int]:
        """One message and the priority it was sent with.

        Raises:
            The same as :meth:`recv`.
        """
        data, prio = await self._next(timeout)
        return self._deliver(data), prio - 1

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        data, _ = await self._next(timeout)
        return self._take_ready([self._deliver(data)], max_messages)

    async def _next(self, timeout: float | None) -> tuple[bytes, int]:
        try:
            deadline = None if timeout is None else self._loop.time() + timeout
        except TypeError:  # timeout="1": checked where it is first added (no cost else)
            raise not_seconds(timeout, self.url) from None
        while True:
            if self._closed:
                raise closed_error(self)
            got = self._next_ready()
            if got is not None:
                return got
            if self._eof or self._dead:
                raise self._ended()
            if timeout == 0:
                if self._peer_ended():  # not waiting, so the loop may not have told us yet
                    continue
                raise Timeout(f"no message from {self.url} yet", endpoint=self.url)
            if self._rwaiter is not None:
                raise LocalProtocolError(
                    f"another task is already receiving on {self.url}; receive from one task "
                    f"(and fan out with a queue), or open one channel per task"
                )
            if (wrong := not_this_loop(self._loop, self.url)) is not None:
                raise wrong
            fut = self._rwaiter = self._loop.create_future()
            self._start_reading()
            try:
                async with within_at(deadline):
                    await fut
            except TimeoutError:
                raise Timeout(
                    f"no message from {self.url} within {timeout} s", endpoint=self.url
                ) from None
            finally:
                self._rwaiter = None
                if not self._swaiters:
                    self._stop_reading()

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        # another thread: the readers, the waiting futures and the end marker's retries are
        # the loop's (a forked copy's close touches none of them)
        if os.getpid() == self._owner and handed_to_loop(self._loop, self.close):
            return
        self._closed = True
        self._unwatch_all()
        self._wake_all()
        if self._eof or self._dead or self._peer_closed or self._post_end():
            self._release()  # nobody to tell, or told through the end pipe (never waits)
            return
        # No end pipe: the marker alone tells the peer; without room for it, keep trying
        # for a while in the background.
        try:
            sent = self._out.try_send(self._end_marker(), EOF_PRIORITY)
        except IpcwireError:
            sent = True
        if sent:
            self._release()
            return
        fd = self._out.fileno()

        def retry() -> None:
            try:
                done = self._out.try_send(self._end_marker(), EOF_PRIORITY)
            except IpcwireError:
                done = True
            if done:
                give_up.cancel()
                self._loop.remove_writer(fd)
                self._release()

        def timeout() -> None:
            self._loop.remove_writer(fd)
            log.info(CLOSE_UNSEEN, self.url)
            self._release()

        self._loop.add_writer(fd, retry)
        give_up = self._loop.call_later(CLOSE_TIMEOUT, timeout)

    def _release(self) -> None:
        self._close_queues()
        if not self._finished.done():
            self._finished.set_result(None)

    async def _aclose_after(self, exc: BaseException | None) -> None:
        """The end of an ``async with`` block (or ``serve()`` handler) that ``exc`` left: as
        :meth:`ipcwire.mq.blocking.MqChannel._close_after`."""
        self._fail_reason = error_reason(exc)
        await self.aclose()

    async def aclose(self) -> None:
        self.close()
        await asyncio.shield(self._finished)

    def __del__(self) -> None:
        """Dropped without ``aclose()``: the peer is told at once, as by the blocking
        channel (:meth:`ipcwire.mq.blocking.MqChannel.__del__`), never waiting. The loop's
        readers go first (in the loop's thread: from another thread, the loop is asked)."""
        if getattr(self, "_closed", True) or not hasattr(self, "_owner"):
            return
        self._closed = True
        if os.getpid() != self._owner:
            self._close_queues()  # a forked copy: only our descriptors
            return
        warnings.warn(
            f"unclosed mq channel {self.url!r}: its peer is told it ended; aclose() it, "
            "or use 'async with'",
            ResourceWarning,
            stacklevel=1,
            source=self,
        )
        loop = self._loop
        if loop.is_closed() or asyncio._get_running_loop() is loop:
            self._dropped()
            return
        try:
            loop.call_soon_threadsafe(self._dropped)
        except RuntimeError:  # closed meanwhile
            self._dropped()

    def _dropped(self) -> None:
        if not self._loop.is_closed():
            self._unwatch_all()
        self._tell_dropped()

    def _unwatch_all(self) -> None:
        """The loop stops watching this channel's descriptors (the queues, the peer's pidfd,
        the end pipes)."""
        self._stop_reading()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._out.fileno())
        if self._pidfd is not None and not self._dead:
            self._loop.remove_reader(self._pidfd)
        self._unwatch_ends()


def _weakly(ch: AioMqChannel, method: Callable[[AioMqChannel], None]) -> Callable[[], None]:
    """A loop callback calling ``method`` on ``ch`` while ``ch`` exists."""
    ref = weakref.ref(ch)

    def call() -> None:
        target = ref()
        if target is not None:
            method(target)

    return call
