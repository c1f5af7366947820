"""Signals as messages: wait for them (:class:`SignalWaiter`), send them (:class:`SignalSender`).

Both are channels, so they work wherever a channel does (``for sig in waiter:``, ``recv``
with a timeout, ``statistics()``). A signal carries no payload: the message *is* the signal
(a :class:`signal.Signals`). Standard signals coalesce (two SIGUSR1 sent before the first is
handled arrive once), so the mechanism is declared unreliable: use it to notify, and carry data
over a channel. A waiter holds a signal it has not handed out yet once (its repeats are
counted in ``statistics().dropped``), so its memory is bounded whatever a signal storm sends.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from ipcwire._deadline import seconds_left
from ipcwire._poll import wait_readable
from ipcwire.channel import Channel, ChannelStatistics, PeerInfo
from ipcwire.errors import ChannelClosed, LocalProtocolError, Timeout
from ipcwire.signals._dispatch import dispatcher
from ipcwire.signals._names import (
    SignalLike,
    parse_signals,
    send_signal,
    signals_url,
    target_pid,
)

__all__ = ["SignalSender", "SignalWaiter"]


class SignalWaiter(Channel):
    """Receives the given signals sent to this process, one message per signal.

    Create it in the main thread (that is where Python installs handlers); ``recv``/``wait``
    work from any thread. While it is open the signals' default actions do not happen (a
    SIGTERM does not kill the process: you decide). ``close()`` restores the previous handlers.
    """

    def __init__(self, signals: Iterable[SignalLike]) -> None:
        wanted = parse_signals(signals)
        if not wanted:
            raise LocalProtocolError("SignalWaiter needs at least one signal to wait for")
        self.signals = tuple(dict.fromkeys(wanted))
        self.url = signals_url(self.signals)
        self._sub = dispatcher.subscribe((int(s) for s in self.signals), self.url)
        self._closed = False
        self._received = 0
        self._lock = threading.Lock()
        self._waiting = 0  # threads in recv: the waker is closed when the last one leaves

    def recv(self, *, timeout: float | None = None) -> signal.Signals:
        """The next signal received (queued ones first).

        Raises:
            Timeout: none arrived in time.
            ChannelClosed: closed (also wakes a thread waiting here).
        """
        with self._lock:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            self._waiting += 1
        try:
            return self._recv(timeout)
        finally:
            with self._lock:
                self._waiting -= 1
                if self._closed and not self._waiting:
                    self._sub.waker.close()

    def _recv(self, timeout: float | None) -> signal.Signals:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            signum = self._sub.take()
            if signum is not None:
                self._received += 1
                return signal.Signals(signum)
            wait = seconds_left(
                deadline, f"no signal ({self.url[7:]}) within {timeout} s", self.url
            )
            wait_readable(self._sub.waker.fd, wait)
            self._sub.waker.drain()

    def wait(self, timeout: float | None = None) -> signal.Signals | None:
        """Like :meth:`recv`, but None instead of :class:`Timeout`."""
        try:
            return self.recv(timeout=timeout)
        except Timeout:
            return None

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Raises: LocalProtocolError (this end receives; use :class:`SignalSender`)."""
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        raise LocalProtocolError(
            f"{self.url} receives signals; send them with SignalSender(pid) or "
            f"ipcwire.connect('signal:PID')",
            endpoint=self.url,
        )

    def close(self) -> None:
        """Stop receiving; restores the previous handlers (when called in the main thread;
        from another thread the handlers stay but act as the previous ones did)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sub.waker.wake()
            if not self._waiting:
                self._sub.waker.close()
        dispatcher.unsubscribe(self._sub)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=0,
            messages_received=self._received,
            bytes_sent=0,
            bytes_received=0,
            buffered_bytes=len(self._sub.queue),
            dropped=self._sub.coalesced,
        )


class SignalSender(Channel):
    """Sends signals to one process (or, with ``group``, its process group).

    ``send("USR1")`` / ``send(signal.SIGUSR1)`` / ``send(10)``.
    """

    def __init__(self, target: Any, *, group: bool = False) -> None:
        self.pid = target_pid(target)
        self.group = group
        self.url = f"signal:{'group:' if group else ''}{self.pid}"
        self._closed = False
        self._sent = 0

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Send one signal.

        Raises:
            ChannelBroken: the process (group) is gone.
            PermissionDenied: it belongs to another user.
            ConfigurationError: not a signal.
            ChannelClosed: this sender was closed.
        """
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        send_signal(self.pid, obj, group=self.group)
        self._sent += 1

    def recv(self, *, timeout: float | None = None) -> Any:
        """Raises: LocalProtocolError (this end sends; wait with :class:`SignalWaiter`)."""
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        raise LocalProtocolError(
            f"{self.url} sends signals; receive them with SignalWaiter in the target process",
            endpoint=self.url,
        )

    def close(self) -> None:
        self._closed = True

    @property
    def peer(self) -> PeerInfo | None:
        return PeerInfo(pid=self.pid)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent, messages_received=0, bytes_sent=0, bytes_received=0
        )
