"""The file spool, blocking driver.

A spool channel sends by adding a message to the directory and receives by claiming one;
``recv()`` acknowledges the message it returned *at the next* ``recv()`` (or at ``close()``),
so a consumer that dies while processing a message gets it redelivered. Leaving a ``with``
block by an exception releases the message instead (it is redelivered). :meth:`claim` gives
explicit ``ack()``/``release()`` instead.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import limit, not_seconds
from ipcwire._oserror import translate
from ipcwire._turns import take_turn
from ipcwire.channel import Channel, Listener
from ipcwire.options import ChannelOptions
from ipcwire.spool._channel import ChannelCore, Delivery, ListenerCore
from ipcwire.spool._consume import Claim
from ipcwire.spool._options import (
    SpoolConfig,
    connect_options,
    listen_options,
    refuse_token,
    spool_options,
)
from ipcwire.spool._store import SpoolStore

__all__ = ["Delivery", "SpoolChannel", "SpoolListener", "connect", "listen", "spool_options"]


class SpoolChannel(ChannelCore, Channel):
    """A channel onto a spool directory: ``send`` adds, ``recv`` claims (at-least-once)."""

    def __init__(self, store: SpoolStore, wire: WireFormat, url: str, cfg: SpoolConfig) -> None:
        super().__init__(store, wire, url, cfg)
        # close() wakes a waiting recv through this descriptor (a pipe where no eventfd)
        try:
            if hasattr(os, "eventfd"):
                self._wake = self._wake_w = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            else:
                self._wake, self._wake_w = os.pipe()
        except OSError as exc:
            self._close_files()
            raise translate(exc, url, "opening the spool") from exc
        self._recv_lock = threading.Lock()
        # taken once by the close() that closes, never given back: a second close() from
        # another thread returns at once instead of writing to and closing the descriptors
        # again (whatever file had got their numbers meanwhile)
        self._closing = threading.Lock()
        self._owner = os.getpid()  # a forked child's close() leaves the parent's channel alone

    # -- sending ----------------------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Add a message to the spool; it is on disk (fsync'd) when this returns.

        A spool never waits for a reader; ``timeout`` bounds the wait for the spool's .order
        lock, which a consumer holds only while it lists new/ (one stopped there keeps it).

        Raises:
            Timeout: .order stayed held (the message names the holder); nothing was queued.
        """
        data = self._pack(obj)
        if self._closed:
            raise self._closed_error()
        self._store.put(data, timeout)
        self._sent += 1
        self._bytes_sent += memoryview(data).nbytes

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        """Add several messages with one directory sync (faster than one ``send`` each);
        ``timeout`` as for :meth:`send`."""
        items = self._pack_all(objs)
        if items:
            self._store.put_many(items, timeout)
            self._count_sent(items)

    # -- receiving --------------------------------------------------------------------------
    def recv(self, *, timeout: float | None = None) -> Any:
        """Claim the next message; the previous one from ``recv`` is acknowledged now."""
        left = self._take_turn(timeout)
        try:
            self._ack_unacked()
            claim = self._wait_claim(left, timeout)
            msg = self._open(claim)
            self._unacked.append(claim)
            return msg
        finally:
            self._recv_lock.release()

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        """Wait for one message, then claim those already waiting (up to ``max_messages``,
        at most 64); all are acknowledged at the next ``recv``/``recv_many``/``close``."""
        left = self._take_turn(timeout)
        try:
            self._ack_unacked()
            return self._batch(self._wait_claim(left, timeout), max_messages)
        finally:
            self._recv_lock.release()

    def claim(self, *, timeout: float | None = None) -> Delivery:
        """Claim the next message for explicit :meth:`Delivery.ack`/``release``.

        Raises:
            Timeout, ChannelClosed, FrameTooLarge, RemoteProtocolError (the message could
            not be decoded; it was moved to dead/).
        """
        left = self._take_turn(timeout)
        try:
            return self._deliver(self._wait_claim(left, timeout))
        finally:
            self._recv_lock.release()

    def _take_turn(self, timeout: float | None) -> float | None:
        """The receive lock, within ``timeout`` (receives take turns: :func:`take_turn`)."""
        return take_turn(self._recv_lock, timeout, self.url, where="in")

    def _wait_claim(self, timeout: float | None, said: float | None) -> Claim:
        """The next claim within ``timeout`` (what is left of the caller's, ``said``: for
        the messages)."""
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
        except TypeError:  # ("1", a list: checked only here, off the common path)
            raise not_seconds(timeout, self.url) from None
        while True:
            self._prepare_claim(time.monotonic())
            claim = self._store.try_claim(self._max_frame)
            if claim is not None:
                return claim
            wait = self._wait_time(time.monotonic(), deadline, said)
            if self._watcher.wait(wait, self._wake):
                raise self._closed_error()

    # -- the rest ---------------------------------------------------------------------------
    def _close(self, *, ack: bool) -> None:
        if not self._closing.acquire(blocking=False):
            return  # closed, or being closed by another thread
        self._closed = True
        if os.getpid() != self._owner:
            # A forked child's copy: the wake-up would end the parent's waiting recv(), whose
            # thread holds the lock here, and the deliveries to settle are the parent's.
            # Only our descriptors are closed.
            self._close_files()
            os.close(self._wake)
            if self._wake_w != self._wake:
                os.close(self._wake_w)
            return
        os.write(self._wake_w, (1).to_bytes(8, sys.byteorder))
        with self._recv_lock:
            try:
                self._settle(ack=ack)
            finally:
                self._close_files()
                os.close(self._wake)
                if self._wake_w != self._wake:
                    os.close(self._wake_w)

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # leaving by an exception: the message being processed is redelivered, not lost
        self._close(ack=et is None)


def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> SpoolChannel:
    """Open the spool at ``spool:///dir`` (created if missing, mode 0700).

    Options: ``fsync`` (default True), ``lease`` (seconds a live consumer may hold a message;
    default: as long as it lives), ``max_attempts`` (then dead/), ``reap_interval``,
    ``poll_interval`` (when inotify is unavailable), ``watch`` ("auto", "inotify", or
    "polling", which a spool on NFS written from other hosts needs), ``mode``. ``timeout``
    and ``reconnect`` are accepted and ignored: opening a spool never waits.
    """
    refuse_token(options)
    cfg = connect_options(endpoint, kw)
    wire = options.wire()
    return SpoolChannel(cfg.store(endpoint.url), wire, endpoint.url, cfg)


class SpoolListener(ListenerCore, Listener):
    """The consumer side of a spool, in the listener shape.

    A spool has no connections: ``accept()`` returns one channel onto the spool at once, then
    waits until the listener is closed (there is never a second "client"). ``serve(handler)``
    therefore runs ``handler`` once, with that channel.
    """

    def __init__(self, endpoint: Endpoint, options: ChannelOptions, cfg: SpoolConfig) -> None:
        super().__init__(endpoint, options, cfg)
        self._done = threading.Event()

    def accept(self, *, timeout: float | None = None) -> Channel:
        store = self._take_store()
        if store is not None:
            return SpoolChannel(store, self._options.wire(), self.url, self._cfg)
        if not self._done.wait(limit(timeout)):
            raise self._no_other_channel()
        raise self._closed_error()

    def close(self) -> None:
        if self._close_store():
            self._done.set()


def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> SpoolListener:
    """Create (if needed) the spool at ``spool:///dir`` and return its consumer listener;
    the options are those of :func:`connect`, plus ``backlog`` (accepted, ignored)."""
    refuse_token(options)
    cfg = listen_options(endpoint, kw)
    return SpoolListener(endpoint, options, cfg)
