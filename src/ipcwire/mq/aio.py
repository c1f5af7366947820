"""POSIX message queues, asyncio driver: opening a channel (:func:`connect`,
:class:`AioMqListener`; the channel itself is in ``_aio_channel.py``). The queue descriptors go
straight into the event loop (``add_reader``/``add_writer``; mq descriptors are pollable on
Linux), no thread per queue.

The protocol (``_proto.py``), the non-blocking steps of opening a channel (``_client.py``,
``_session.py``, ``_rendezvous.py``) and a channel's state and decisions (``_channel.py``) are
the blocking driver's too; this module only waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._stream.listener import collected_unclosed, thread_twin, wait_dropped_closed
from ipcwire._stream.retry import backoff_delays
from ipcwire.aio.channel import AcceptQueue, AioListener
from ipcwire.errors import (
    ConnectionRefused,
)
from ipcwire.mq._aio_channel import AioMqChannel, wait_fd
from ipcwire.mq._client import (
    ClientSession,
    connect_args,
    not_accepting,
    not_answering,
    open_rendezvous,
    retry_delay,
)
from ipcwire.mq._queue import MessageQueue
from ipcwire.mq._rendezvous import (
    bind_listener,
    release_rendezvous,
    unlink_at_exit,
)
from ipcwire.mq._session import (
    Deferred,
    ServerSession,
    announced,
    channel_wire,
)
from ipcwire.options import ChannelOptions

__all__ = ["AioMqChannel", "AioMqListener", "connect", "listen"]

log = logging.getLogger("ipcwire")


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
        if not await wait_fd(rendezvous.fileno(), write=True, timeout=deadline - loop.time()):
            raise not_accepting(endpoint.url, backlog, deadline - start)
        session = ClientSession(name, options, maxmsg=maxmsg, msgsize=msgsize, mode=mode)
        try:
            hello = session.hello()
            while not rendezvous.try_send(hello, 0):
                if not await wait_fd(
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
                if not await wait_fd(
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
