"""POSIX message queues, blocking driver: a channel is a pair of queues (see ``_proto.py``).
This module opens channels (:func:`connect`, :class:`MqListener`); the channel itself is
:class:`~ipcwire.mq._blocking_channel.MqChannel`.

Waiting uses ``poll`` on the queue descriptors, the peer's pidfd (readable when the peer
process exits, so a dead peer is an error at once, not a hang), the channel's end pipe
(readable once the peer closed, ``_ends.py``) and an eventfd that ``close()`` signals from any
thread. What does not wait is shared with the asyncio driver: the channel's state and
decisions (``_channel.py``), opening a channel (``_client.py``, ``_session.py``,
``_rendezvous.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections import deque
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._stream.listener import (
    collected_unclosed,
    thread_twin,
    wait_dropped_closed,
)
from ipcwire._stream.retry import backoff_delays
from ipcwire.channel import Listener
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    IpcwireError,
    Timeout,
)
from ipcwire.mq._blocking_channel import MqChannel, deadline_of, poll_wait_ms
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

__all__ = ["MessageQueue", "MqChannel", "MqListener", "connect", "listen"]

log = logging.getLogger("ipcwire")

_IN: Final = select.POLLIN
_OUT: Final = select.POLLOUT


def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    maxmsg: int | None = None,
    msgsize: int | None = None,
    mode: int = 0o600,
    **kw: Any,
) -> MqChannel:
    """Connect to an mq listener; see :func:`ipcwire.connect`.

    ``maxmsg``/``msgsize`` size this channel's two queues (defaults: the kernel's
    ``msg_default``/``msgsize_default``); ``mode`` is their permission bits.
    """
    name, maxmsg, msgsize, limit = connect_args(
        endpoint, kw, timeout=timeout, maxmsg=maxmsg, msgsize=msgsize
    )
    start = time.monotonic()
    deadline = start + max(limit, reconnect or 0.0)
    rendezvous = _open_rendezvous(name, endpoint.url, reconnect, start)
    backlog = rendezvous.maxmsg
    listener_uid = os.fstat(rendezvous.fileno()).st_uid
    try:
        # Wait for room before creating the pair: a client killed while it waits would leave
        # queues that only the next connect of that name removes (_client._reclaim).
        if _wait_one(rendezvous.fileno(), _OUT, deadline) is None:
            raise not_accepting(endpoint.url, backlog, deadline - start)
        session = ClientSession(name, options, maxmsg=maxmsg, msgsize=msgsize, mode=mode)
        try:
            _announce(rendezvous, session.hello(), deadline, endpoint.url, deadline - start)
        except BaseException:
            session.abort()
            raise
    finally:
        rendezvous.close()
    try:
        while True:
            got = session.dn.try_recv()
            if got is None:
                if _wait_one(session.dn.fileno(), _IN, deadline) is None:
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
    return MqChannel(
        session.dn,
        session.up,
        wire,
        endpoint.url,
        peer_pid=session.server_pid,
        pidfd=pidfd,
        ends=session.ends,
        tells=session.fails_agreed,
    )


def _open_rendezvous(name: str, url: str, reconnect: float | None, start: float) -> MessageQueue:
    delays = backoff_delays()
    while True:
        try:
            return open_rendezvous(name, url)
        except ConnectionRefused as exc:
            time.sleep(retry_delay(exc, reconnect, start, time.monotonic(), delays))


def _announce(
    rendezvous: MessageQueue, hello: bytes, deadline: float, url: str, waited: float
) -> None:
    while not rendezvous.try_send(hello, 0):
        if _wait_one(rendezvous.fileno(), _OUT, deadline) is None:
            raise not_accepting(url, rendezvous.maxmsg, waited)


def _wait_one(fd: int, event: int, deadline: float | None) -> int | None:
    poller = select.poll()
    poller.register(fd, event)
    while not (ready := poller.poll(poll_wait_ms(deadline))):
        if deadline is None or time.monotonic() >= deadline:
            return None
    return ready[0][1]


class MqListener(Listener):
    """Accepts mq channels announced on the rendezvous queue.

    A thread of the listener answers clients' announcements as they come, whether or not
    anyone is in ``accept()`` (as the kernel completes a socket's connections into its
    accept queue), so ``connect`` returns at once; ``accept()`` hands over the channels in
    the order they opened. At most ``backlog`` clients (the rendezvous queue's ``maxmsg``)
    are answered and not yet accepted; beyond that the thread stops reading the queue, and
    the clients wait there (then, the queue full, for room in it) within their timeout.
    ``close()`` stops the thread and closes the channels nobody accepted.
    """

    def __init__(
        self,
        queue: MessageQueue,
        lock: Any,
        options: ChannelOptions,
        *,
        unlink: bool,
    ) -> None:
        self.url = options.url
        self._q = queue
        self._lock = lock
        self._options = options
        self._unlink = unlink
        if unlink:
            unlink_at_exit(queue, lock)  # also if the listener is never closed
        self._closed = False
        self._dropped = False  # collected without close(): the answering thread closes it
        self._backlog = max(1, queue.maxmsg)
        self._accept_lock = threading.Lock()  # one accept() waits at a time
        self._cond = threading.Condition()  # guards _ready, _failed, _closed's effects
        self._ready: deque[MqChannel] = deque()  # answered, waiting for accept()
        self._failed: BaseException | None = None  # what stopped the answering thread
        # the answering thread's own (nobody else touches them while it runs)
        self._pending: dict[int, ServerSession] = {}  # by up-queue fd
        self._deferred = Deferred()  # out of descriptors: an announcement to take again
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._owner = os.getpid()
        self._thread = threading.Thread(  # (its twin: see thread_twin)
            target=thread_twin(self)._answer, name=f"ipcwire mq accept {self.url}", daemon=True
        )
        self._thread.start()

    def __del__(self) -> None:
        """Collected without :meth:`close`: a ``ResourceWarning``, and the answering thread
        closes it (a finalizer must not wait, nor take a lock)."""
        if collected_unclosed(self):
            with contextlib.suppress(OSError):
                os.eventfd_write(self._wake, 1)

    @property
    def queue(self) -> MessageQueue:
        """The rendezvous queue."""
        return self._q

    def accept(self, *, timeout: float | None = None) -> MqChannel:
        deadline = deadline_of(timeout)
        # Another thread's accept() may be waiting: wait for it within this call's own
        # timeout.
        wait = -1 if deadline is None else max(deadline - time.monotonic(), 0)
        if not self._accept_lock.acquire(timeout=wait):
            raise Timeout(
                f"no client connected to {self.url} within {timeout} s (another thread was "
                f"accepting)",
                endpoint=self.url,
            )
        try:
            return self._accept(deadline, timeout)
        finally:
            self._accept_lock.release()

    def _accept(self, deadline: float | None, timeout: float | None) -> MqChannel:
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._ready or self._closed or self._failed,
                None if deadline is None else max(deadline - time.monotonic(), 0),
            ):
                raise Timeout(
                    f"no client connected to {self.url} within {timeout} s", endpoint=self.url
                )
            if self._closed:
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
            if not self._ready and self._failed is not None:
                raise ChannelBroken(
                    f"listener {self.url} stopped answering clients: {self._failed}; close "
                    f"it and listen again",
                    endpoint=self.url,
                ) from self._failed
            ch = self._ready.popleft()
            os.eventfd_write(self._wake, 1)  # room among the backlog: read the queue again
            return ch

    # -- the answering thread ---------------------------------------------------------------
    def _answer(self) -> None:
        try:
            while not self._closed and not self._dropped:
                self._answer_once()
        except BaseException as exc:  # (not expected: the steps log and drop a client)
            log.error("%s stopped answering clients", self.url, exc_info=True)
            with self._cond:
                self._failed = exc
                self._cond.notify_all()
        finally:
            for s in list(self._pending.values()):
                self._drop(s)
            if self._dropped:
                self.close()  # (in this thread: close() does not wait for itself)

    def _full(self) -> bool:
        """Clients answered and not accepted (and those in their handshake) fill the
        backlog: leave the others in the queue."""
        return len(self._ready) + len(self._pending) >= self._backlog

    def _answer_once(self) -> None:
        now = time.monotonic()
        for s in [s for s in self._pending.values() if s.deadline <= now]:
            log.info("%s dropped pid %d: handshake timed out", self.url, s.pid)
            self._drop(s)
        reading = not self._full() and not self._deferred.paused()
        poller = select.poll()
        if reading:  # (readable all along while paused or full)
            poller.register(self._q.fileno(), _IN)
        poller.register(self._wake, _IN)
        for fd in self._pending:
            poller.register(fd, _IN)
        wait: float | None = None
        if self._pending:
            wait = min(s.deadline for s in self._pending.values())
        if self._deferred.paused() and not self._full():
            retry = self._deferred.retry_at
            wait = retry if wait is None else min(wait, retry)
        ready = dict(poller.poll(poll_wait_ms(wait)))
        if self._wake in ready:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wake)
        if self._closed:
            return
        for fd in [fd for fd in ready if fd in self._pending]:
            self._advance(self._pending[fd])
        if (self._q.fileno() in ready or self._deferred.due()) and not self._full():
            self._take_announcements()

    def _take_announcements(self) -> None:
        for s in announced(self._q, self._options, self._deferred):
            if s.done:
                self._hand_over(s)
            else:
                self._pending[s.up.fileno()] = s
            if self._full():
                return  # (the generator stops: nothing more is read)

    def _advance(self, s: ServerSession) -> None:
        opened = s.advance(self.url)
        if opened is None:
            self._drop(s)
        elif opened:
            del self._pending[s.up.fileno()]
            self._hand_over(s)

    def _drop(self, s: ServerSession) -> None:
        self._pending.pop(s.up.fileno(), None)
        s.close()

    def _hand_over(self, s: ServerSession) -> None:
        """A client's channel is open: queue it for accept()."""
        try:
            ch = self._channel(s)
        except IpcwireError as exc:  # (it closed the queues, pidfd and end pipe)
            log.warning("%s dropped client pid %d: %s", self.url, s.pid, exc)
            return
        with self._cond:
            if self._closed:
                ch.close()
                return
            self._ready.append(ch)
            self._cond.notify()

    def _channel(self, s: ServerSession) -> MqChannel:
        wire = channel_wire(self._options, s.hs)
        return MqChannel(
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

    def close(self) -> None:
        if self._closed:
            return
        if os.getpid() != self._owner:
            # A forked child's copy: as MqChannel.close (the answering thread is the
            # parent's, and may have held the condition's lock at the fork; a wake-up would
            # reach it); the clients and the queue are the parent's.
            self._closed = True
            for s in self._pending.values():
                s.close()
            while self._ready:
                self._ready.popleft().close()
            release_rendezvous(
                self._q, self._lock, self._q.name, self._options, unlink=self._unlink
            )
            os.close(self._wake)
            return
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        os.eventfd_write(self._wake, 1)
        if self._thread is not threading.current_thread():
            self._thread.join()  # (never long: each of its steps is non-blocking)
        with self._cond:
            ready = list(self._ready)
            self._ready.clear()
        for ch in ready:  # nobody accepted them: their clients see the end
            ch.close()
        release_rendezvous(self._q, self._lock, self._q.name, self._options, unlink=self._unlink)
        with self._cond:
            os.close(self._wake)
            self._wake = -1


def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    mode: int = 0o600,
    backlog: int | None = None,
    unlink: bool = True,
    **kw: Any,
) -> MqListener:
    """Listen on an mq rendezvous queue; see :func:`ipcwire.listen`.

    ``backlog``: announcements that may wait (the rendezvous queue's maxmsg; default the
    kernel's ``msg_default``). ``unlink=False`` keeps the queue after close.
    """
    wait_dropped_closed()  # (a listener this program dropped may still hold the queue)
    q, lock = bind_listener(endpoint, kw, mode=mode, backlog=backlog)
    return MqListener(q, lock, options, unlink=unlink)
