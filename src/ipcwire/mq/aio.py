"""POSIX message queues, asyncio driver: the queue descriptors go straight into the event loop
(``add_reader``/``add_writer``; mq descriptors are pollable on Linux), no thread per queue.

The protocol (``_proto.py``), the non-blocking steps of opening a channel (``_client.py``,
``_session.py``) and a channel's state and decisions (``_channel.py``) are the blocking
driver's too; this module only waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Final

from ipcwire._core.ending import error_reason
from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import not_seconds
from ipcwire._stream.listener import collected_unclosed, thread_twin, wait_dropped_closed
from ipcwire._stream.retry import backoff_delays
from ipcwire.aio._timeouts import within, within_at
from ipcwire.aio._without_loop import not_this_loop
from ipcwire.aio.channel import AcceptQueue, AioChannel, AioListener
from ipcwire.channel import closed_error
from ipcwire.errors import (
    ConnectionRefused,
    IpcwireError,
    LocalProtocolError,
    Timeout,
)
from ipcwire.mq._channel import CLOSE_TIMEOUT, CLOSE_UNSEEN, ChannelCore
from ipcwire.mq._client import (
    ClientSession,
    connect_args,
    not_accepting,
    not_answering,
    open_rendezvous,
    retry_delay,
)
from ipcwire.mq._proto import EOF_PRIORITY, kernel_priority, pieces
from ipcwire.mq._queue import MessageQueue
from ipcwire.mq._session import (
    Deferred,
    ServerSession,
    announced,
    bind_listener,
    channel_wire,
    release_rendezvous,
    unlink_at_exit,
)
from ipcwire.options import ChannelOptions

__all__ = ["AioMqChannel", "AioMqListener", "connect", "listen"]

log = logging.getLogger("ipcwire")

_MAX_ABSORB: Final = 1024  # messages read ahead while a send waits, to spot the peer's close


async def _wait_fd(fd: int, *, write: bool, timeout: float | None) -> bool:
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


async def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    maxmsg: int | None = None,
    msgsize: int | None = None,
    mode: int = 0o600,
    **kw: Any,
) -> AioMqChannel:
    """Connect to an mq listener; see :func:`ipcwire.aio.connect` and the blocking driver."""
    name, maxmsg, msgsize, limit = connect_args(
        endpoint, kw, timeout=timeout, maxmsg=maxmsg, msgsize=msgsize
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + max(limit, reconnect or 0.0)
    rendezvous = await _open_rendezvous(name, endpoint.url, reconnect, start)
    backlog = rendezvous.maxmsg
    listener_uid = os.fstat(rendezvous.fileno()).st_uid
    try:
        # Wait for room before creating the pair: a client killed while it waits would leave
        # queues that only the next connect of that name removes (_client._reclaim).
        if not await _wait_fd(rendezvous.fileno(), write=True, timeout=deadline - loop.time()):
            raise not_accepting(endpoint.url, backlog, deadline - start)
        session = ClientSession(name, options, maxmsg=maxmsg, msgsize=msgsize, mode=mode)
        try:
            hello = session.hello()
            while not rendezvous.try_send(hello, 0):
                if not await _wait_fd(
                    rendezvous.fileno(), write=True, timeout=deadline - loop.time()
                ):
                    raise not_accepting(endpoint.url, backlog, deadline - start)
        except BaseException:
            session.abort()
            raise
    finally:
        rendezvous.close()
    try:
        while True:
            got = session.dn.try_recv()
            if got is None:
                if not await _wait_fd(
                    session.dn.fileno(), write=False, timeout=deadline - loop.time()
                ):
                    raise not_answering(
                        endpoint.url,
                        deadline - start,
                        backlog,
                        listener_uid=listener_uid,
                        mode=mode,
                    )
                continue
            if session.feed(*got):
                break
        pidfd = session.finish()
    except BaseException:
        session.abort()
        raise
    wire = channel_wire(options, session.hs)
    return AioMqChannel(
        session.dn,
        session.up,
        wire,
        endpoint.url,
        peer_pid=session.server_pid,
        pidfd=pidfd,
        ends=session.ends,
        tells=session.fails_agreed,
    )


async def _open_rendezvous(
    name: str, url: str, reconnect: float | None, start: float
) -> MessageQueue:
    loop = asyncio.get_running_loop()
    delays = backoff_delays()
    while True:
        try:
            return open_rendezvous(name, url)
        except ConnectionRefused as exc:
            await asyncio.sleep(retry_delay(exc, reconnect, start, loop.time(), delays))


class AioMqListener(AioListener):
    """Accepts mq channels, driven by the event loop: it answers clients as they announce
    themselves, whether or not anyone awaits ``accept()``, up to ``backlog`` (the rendezvous
    queue's ``maxmsg``) answered and not accepted; beyond that it stops reading its queue
    until ``accept()`` makes room (as :class:`ipcwire.mq.blocking.MqListener`)."""

    def __init__(
        self, queue: MessageQueue, lock: Any, options: ChannelOptions, *, unlink: bool
    ) -> None:
        self.url = options.url
        self._loop = asyncio.get_running_loop()
        self._q = queue
        self._lock = lock
        self._options = options
        self._unlink = unlink
        if unlink:
            unlink_at_exit(queue, lock)  # also if the listener is never closed
        self._closed = False
        self._backlog = max(1, queue.maxmsg)
        self._pending: dict[int, tuple[ServerSession, asyncio.TimerHandle]] = {}
        self._ready: AcceptQueue[AioMqChannel] = AcceptQueue()
        self._deferred = Deferred()  # out of descriptors: an announcement to take again
        self._reading = True  # the queue is watched
        # The loop's callbacks are its twin's (see thread_twin): a bound method of this
        # listener in the loop's readers and timers would keep it alive for ever, so a
        # listener the program dropped without close() would hold its queue until exit.
        self._twin = thread_twin(self)
        self._loop.add_reader(queue.fileno(), self._twin._announcements)
        self._dropped = False  # collected without close(): closed at the loop's next turn

    def __del__(self) -> None:
        """Collected without :meth:`close`: a ``ResourceWarning``, and its twin is closed at
        the loop's next turn (a finalizer must not wait, nor touch the loop's state)."""
        if collected_unclosed(self):
            try:
                self._loop.call_soon_threadsafe(self._twin.close)
            except RuntimeError:  # the loop is closed: its readers and timers went with it
                self._twin.close()

    def _full(self) -> bool:
        """Clients answered and not accepted (and those in their handshake) fill the
        backlog: leave the others in the queue."""
        return self._ready.qsize() + len(self._pending) >= self._backlog

    def _announcements(self) -> None:
        for s in announced(self._q, self._options, self._deferred):
            if s.done:
                self._ready.put(self._channel(s))
            else:
                fd = s.up.fileno()
                twin = self._twin  # (the loop holds the twin, never this listener)
                timer = self._loop.call_later(self._options.handshake_timeout, twin._expire, fd)
                self._pending[fd] = (s, timer)
                self._loop.add_reader(fd, twin._advance, fd)
            if self._full():
                break  # (the generator stops: nothing more is read)
        self._watch()
        if self._deferred.paused():  # the queue stays readable: not watched meanwhile
            delay = max(self._deferred.retry_at - time.monotonic(), 0)
            self._loop.call_later(delay, self._twin._resume)

    def _watch(self) -> None:
        """Watch the queue while there is room among the backlog and descriptors to take
        a client, else not (it stays readable: the loop would spin)."""
        want = not (self._closed or self._full() or self._deferred.paused())
        if want and not self._reading:
            self._loop.add_reader(self._q.fileno(), self._twin._announcements)
        elif not want and self._reading:
            self._loop.remove_reader(self._q.fileno())
        self._reading = want

    def _resume(self) -> None:
        if not self._closed and not self._full():
            self._announcements()  # (the one held first)

    def _room(self) -> None:
        """A place among the backlog came free: take the clients waiting in the queue."""
        if not (self._closed or self._reading or self._deferred.paused() or self._full()):
            self._announcements()

    def _advance(self, fd: int) -> None:
        s, _ = self._pending[fd]
        opened = s.advance(self.url)
        if opened is None:
            self._forget(fd)
            s.close()
            self._room()
        elif opened:
            self._forget(fd)
            self._ready.put(self._channel(s))

    def _expire(self, fd: int) -> None:
        if fd in self._pending:
            s, _ = self._pending[fd]
            log.info("%s dropped pid %d: handshake timed out", self.url, s.pid)
            self._forget(fd)
            s.close()
            self._room()

    def _forget(self, fd: int) -> None:
        _, timer = self._pending.pop(fd)
        timer.cancel()
        self._loop.remove_reader(fd)

    def _channel(self, s: ServerSession) -> AioMqChannel:
        wire = channel_wire(self._options, s.hs)
        return AioMqChannel(
            s.up,
            s.dn,
            wire,
            self.url,
            peer_pid=s.peer_pid,
            pidfd=s.pidfd,
            ends=s.ends,
            tells=s.fails,
            life=s.up.name if s.life else None,
        )

    async def accept(self, *, timeout: float | None = None) -> AioMqChannel:
        ch = await self._ready.get(self.url, timeout)
        self._room()
        return ch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop.is_closed():  # (its readers and timers went with it)
            for s, _ in self._pending.values():
                s.close()
            self._pending.clear()
        else:
            self._watch()
            for fd in list(self._pending):
                s, _ = self._pending[fd]
                self._forget(fd)
                s.close()
            self._ready.close()
        release_rendezvous(self._q, self._lock, self._q.name, self._options, unlink=self._unlink)


async def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    mode: int = 0o600,
    backlog: int | None = None,
    unlink: bool = True,
    **kw: Any,
) -> AioMqListener:
    """Listen on an mq rendezvous queue; see :func:`ipcwire.aio.listen`."""
    wait_dropped_closed()  # (a blocking listener this program dropped may still hold it)
    q, lock = bind_listener(endpoint, kw, mode=mode, backlog=backlog)
    return AioMqListener(q, lock, options, unlink=unlink)
