"""POSIX message queues, blocking driver: a channel is a pair of queues (see ``_proto.py``).

Waiting uses ``poll`` on the queue descriptors, the peer's pidfd (readable when the peer
process exits, so a dead peer is an error at once, not a hang), the channel's end pipe
(readable once the peer closed, ``_ends.py``) and an eventfd that ``close()`` signals from any
thread. What does not wait is shared with the asyncio driver: the channel's
state and decisions (``_channel.py``), opening a channel (``_client.py``, ``_session.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import warnings
from collections import deque
from typing import Any, Final

from ipcwire._core.ending import error_reason
from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import limit
from ipcwire._oserror import translate
from ipcwire._poll import poll_ms
from ipcwire._stream.listener import (
    collected_unclosed,
    thread_twin,
    wait_dropped_closed,
)
from ipcwire._stream.retry import backoff_delays
from ipcwire._turns import take_turn
from ipcwire.channel import Channel, Listener, closed_error
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    IpcwireError,
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

__all__ = ["MessageQueue", "MqChannel", "MqListener", "connect", "listen"]

log = logging.getLogger("ipcwire")

_IN: Final = select.POLLIN
_OUT: Final = select.POLLOUT
_ERR: Final = select.POLLERR | select.POLLHUP | select.POLLNVAL


def _deadline(timeout: float | None) -> float | None:
    timeout = limit(timeout)
    return None if timeout is None else time.monotonic() + timeout


def _ms(deadline: float | None) -> int | None:
    """poll()'s wait until ``deadline``; at most poll()'s longest (about 24 days: a longer
    timeout= returns early, and the caller waits again)."""
    return None if deadline is None else poll_ms(deadline - time.monotonic())


class MqChannel(ChannelCore, Channel):
    """One end of an mq channel: messages out on one queue, in on the other.

    A message of the queue's msgsize or more travels in pieces and is delivered whole.

    ``send(obj, priority=N)`` (0 to ``USER_PRIORITY_MAX``) lets urgent messages overtake;
    :meth:`recv_with_priority` returns the priority too.
    """

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
        try:
            self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError as exc:
            self._close_queues()  # the channel owns them from here
            raise translate(exc, url, "opening") from exc
        # one poll set for receiving, made once: the queue, close(), the peer's exit and close
        self._recv_poller = select.poll()
        for fd in (inbound.fileno(), self._wake, pidfd, ends):
            if fd is not None:
                self._recv_poller.register(fd, _IN)
        self._watch_ends = ends is not None  # (in the poll set until seen readable)
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._owner = os.getpid()  # a forked child's close() leaves the parent's channel alone

    # -- sending ----------------------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None, priority: int = 0) -> None:
        """Send one message (see :meth:`ipcwire.Channel.send`); ``priority`` 0 is normal.

        Raises:
            ConfigurationError: a priority outside 0..USER_PRIORITY_MAX.
        """
        prio = 1 if priority == 0 else kernel_priority(priority)
        data = self._encode(obj)
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        if size > self._limit:
            raise self._too_large(size)
        with self._send_lock:
            self._check_send()
            if size < self._msgsize:
                if not self._out.try_send(data, prio):
                    self._wait_send(data, prio, timeout, _deadline(timeout))
            else:
                self._send_pieces(data, prio, timeout)
        self._sent += 1
        self._bytes_sent += size

    def _send_pieces(self, data: Any, prio: int, timeout: float | None) -> None:
        deadline = _deadline(timeout)
        sent = 0  # pieces of this message in the queue
        try:
            for piece in pieces(data, self._msgsize):
                if not self._out.try_send(piece, prio):
                    self._wait_send(piece, prio, timeout, deadline)
                sent += 1
        except Timeout as exc:
            if sent == 0:
                raise
            raise self._part_way() from exc
        except BaseException:
            # Stopped otherwise after some pieces went (an exception from a signal handler,
            # say): the next message's pieces would be joined to them, so no more sends.
            if sent:
                self._part_way()
            raise

    def _wait_send(
        self, data: Any, prio: int, timeout: float | None, deadline: float | None
    ) -> None:
        ends = self._ends
        while True:
            if self._peer_closed:  # nobody will make room
                raise self._gone("send to")
            poller = select.poll()
            poller.register(self._out.fileno(), _OUT)
            poller.register(self._wake, _IN)
            if self._pidfd is not None:
                poller.register(self._pidfd, _IN)
            if ends is not None:
                poller.register(ends, _IN)  # the peer closing wakes us
            absorb = len(self._pending) < self._in.maxmsg
            if absorb:
                # the peer may have closed: look for its end marker while we wait
                poller.register(self._in.fileno(), _IN)
            ready = dict(poller.poll(_ms(deadline)))
            if self._closed:
                raise closed_error(self)
            if self._pidfd is not None and self._pidfd in ready:
                self._dead = True
                raise self._gone("send to")
            if ends is not None and ends in ready:
                self._peer_closed = True
                raise self._gone("send to")
            if absorb and self._in.fileno() in ready and self._absorb():
                raise self._gone("send to")
            if self._out.try_send(data, prio):
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise self._send_timeout(timeout)

    def _absorb(self) -> bool:
        """Move waiting inbound pieces aside (for recv) to see whether the peer closed.
        Only when no other thread is receiving. True when the end marker was found."""
        if not self._recv_lock.acquire(blocking=False):
            return False
        try:
            self._read_ahead(self._in.maxmsg)
            return self._eof
        finally:
            self._recv_lock.release()

    # -- receiving --------------------------------------------------------------------------
    def recv(self, *, timeout: float | None = None) -> Any:
        left = self._take_turn(timeout)
        try:
            data, _ = self._next(left, timeout)
            return self._deliver(data)
        finally:
            self._recv_lock.release()

    def recv_with_priority(self, *, timeout: float | None = None) -> tuple[Any, int]:
        """One message and the priority it was sent with.

        Raises:
            The same as :meth:`recv`.
        """
        left = self._take_turn(timeout)
        try:
            data, prio = self._next(left, timeout)
            return self._deliver(data), prio - 1
        finally:
            self._recv_lock.release()

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        left = self._take_turn(timeout)
        try:
            data, _ = self._next(left, timeout)
            return self._take_ready([self._deliver(data)], max_messages)
        finally:
            self._recv_lock.release()

    def _take_turn(self, timeout: float | None) -> float | None:
        """The receive lock, within ``timeout`` (receives take turns: :func:`take_turn`)."""
        return take_turn(self._recv_lock, timeout, self.url)

    def _next(self, timeout: float | None, said: float | None) -> tuple[bytes, int]:
        """The next whole message and its kernel priority (called with the recv lock).
        ``timeout``: what is left of the caller's, ``said`` (for the messages)."""
        if self._closed:
            raise closed_error(self)
        deadline = None if not timeout else _deadline(timeout)
        while True:
            # the peer's exit seen *before* the queue is found empty: then it is all here (a
            # send waiting in another thread may see it exit meanwhile)
            dead = self._dead
            got = self._next_ready()
            if got is not None:
                return got
            if self._eof or dead:
                raise self._ended()
            if timeout == 0:
                if self._peer_ended():  # not waiting, so not watching the end pipe: look
                    continue
                raise Timeout(
                    f"no message from {self.url} " + ("yet" if said == 0 else f"within {said} s"),
                    endpoint=self.url,
                )
            self._wait_recv(deadline, said)

    def _wait_recv(self, deadline: float | None, timeout: float | None) -> None:
        ready = self._recv_poller.poll(None if deadline is None else _ms(deadline))
        if self._closed:
            raise closed_error(self)
        if not ready:
            if deadline is None or time.monotonic() >= deadline:
                raise Timeout(f"no message from {self.url} within {timeout} s", endpoint=self.url)
            return
        for fd, _ in ready:  # each is seen once, then left out of the poll set
            if fd == self._pidfd:
                self._dead = True  # messages it sent before dying are still delivered
                self._recv_poller.unregister(fd)
            elif fd == self._ends and self._watch_ends:
                self._peer_closed = True  # its messages before the close are in the queue
                self._watch_ends = False
                self._recv_poller.unregister(fd)

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._owner:
            # A forked child's copy: the parent's threads may wait on the wake-up eventfd
            # (nobody would read it: their waits would spin) and hold the locks, and an end
            # marker would reach the parent's peer. Only our descriptors are closed.
            self._close_queues()
            os.close(self._wake)
            return
        os.eventfd_write(self._wake, 1)  # wakes threads blocked in send or recv
        got_send = self._send_lock.acquire(timeout=CLOSE_TIMEOUT)
        try:
            if not (self._eof or self._dead or self._peer_closed):
                self._send_eof()
        finally:
            if got_send:
                self._send_lock.release()
        got_recv = self._recv_lock.acquire(timeout=CLOSE_TIMEOUT)
        try:
            self._close_queues()
            if got_send and got_recv:  # no thread can be waiting on it any more
                wake, self._wake = self._wake, -1
                os.close(wake)
        finally:
            if got_recv:
                self._recv_lock.release()

    def _close_after(self, exc: BaseException | None) -> None:
        """The end of a ``with`` block (or ``serve()`` handler) that ``exc`` left: a failure
        closes with its reason (the type only), which the peer raises as ChannelBroken."""
        self._fail_reason = error_reason(exc)
        self.close()

    def _send_eof(self) -> None:
        """Tell the peer this end closed: through the end pipe, never waiting; without one,
        post the end-of-channel marker, waiting a while for room (logged when there was
        none)."""
        if self._post_end():
            return
        deadline = time.monotonic() + CLOSE_TIMEOUT
        try:
            while not self._out.try_send(self._end_marker(), EOF_PRIORITY):
                poller = select.poll()
                poller.register(self._out.fileno(), _OUT)
                if self._pidfd is not None:
                    poller.register(self._pidfd, _IN)
                ready = dict(poller.poll(_ms(deadline)))
                if not ready or (self._pidfd is not None and self._pidfd in ready):
                    log.info(CLOSE_UNSEEN, self.url)
                    return
        except IpcwireError:
            pass

    def __del__(self) -> None:
        """Dropped without :meth:`close`: the peer is told at once (it would otherwise keep
        its queues, and a thread serving them, until this process exits), with a
        ``ResourceWarning``; the queues and descriptors are released."""
        try:
            if not getattr(self, "_closed", True) and hasattr(self, "_owner"):
                self._closed = True
                if os.getpid() != self._owner:  # a forked copy: only our descriptors
                    self._close_queues()
                else:
                    warnings.warn(
                        f"unclosed mq channel {self.url!r}: its peer is told it ended; "
                        "close() it, or use 'with'",
                        ResourceWarning,
                        stacklevel=1,
                        source=self,
                    )
                    self._tell_dropped()
        finally:
            try:
                os.close(self._wake)
            except (OSError, AttributeError):
                pass


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
    while not (ready := poller.poll(_ms(deadline))):
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
        deadline = _deadline(timeout)
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
        ready = dict(poller.poll(_ms(wait)))
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
