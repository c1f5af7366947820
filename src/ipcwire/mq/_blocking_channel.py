"""POSIX message queues, blocking driver: the channel (:class:`MqChannel`); opening one and the
listener are in ``blocking.py``.

Waiting uses ``poll`` on the queue descriptors, the peer's pidfd (readable when the peer
process exits, so a dead peer is an error at once, not a hang), the channel's end pipe
(readable once the peer closed, ``_ends.py``) and an eventfd that ``close()`` signals from any
thread.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import warnings
from typing import Any, Final

from ipcwire._core.ending import error_reason
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import limit
from ipcwire._oserror import translate
from ipcwire._poll import poll_ms
from ipcwire._turns import take_turn
from ipcwire.channel import Channel, closed_error
from ipcwire.errors import (
    IpcwireError,
    Timeout,
)
from ipcwire.mq._channel import CLOSE_TIMEOUT, CLOSE_UNSEEN, ChannelCore
from ipcwire.mq._proto import EOF_PRIORITY, kernel_priority, pieces
from ipcwire.mq._queue import MessageQueue

__all__ = ["MqChannel", "deadline_of", "poll_wait_ms"]

log = logging.getLogger("ipcwire")

_IN: Final = select.POLLIN
_OUT: Final = select.POLLOUT
_ERR: Final = select.POLLERR | select.POLLHUP | select.POLLNVAL


def deadline_of(timeout: float | None) -> float | None:
    timeout = limit(timeout)
    return None if timeout is None else time.monotonic() + timeout


def poll_wait_ms(deadline: float | None) -> int | None:
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
                    self._wait_send(data, prio, timeout, deadline_of(timeout))
            else:
                self._send_pieces(data, prio, timeout)
        self._sent += 1
        self._bytes_sent += size

    def _send_pieces(self, data: Any, prio: int, timeout: float | None) -> None:
        deadline = deadline_of(timeout)
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
            ready = dict(poller.poll(poll_wait_ms(deadline)))
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
        deadline = None if not timeout else deadline_of(timeout)
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
        ready = self._recv_poller.poll(None if deadline is None else poll_wait_ms(deadline))
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
                ready = dict(poller.poll(poll_wait_ms(deadline)))
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
