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
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire.channel import Channel, ChannelStatistics, Listener, PeerInfo
from ipcwire.errors import (
    ChannelClosed,
    FrameTooLarge,
    IpcwireError,
    Timeout,
)
from ipcwire.options import ChannelOptions
from ipcwire.spool._options import SpoolConfig, connect_options, listen_options, spool_options
from ipcwire.spool._store import Claim, SpoolStore

__all__ = ["Delivery", "SpoolChannel", "SpoolListener", "connect", "listen", "spool_options"]

BATCH: Final = 64  # recv_many claims at most this many files at once (each holds an fd)


class Delivery:
    """A message claimed with :meth:`SpoolChannel.claim`: ``ack()`` when done, or
    ``release()`` to put it back. Closing the channel releases unfinished deliveries."""

    __slots__ = ("_claim", "message")

    def __init__(self, claim: Claim, message: Any) -> None:
        self._claim = claim
        self.message = message

    @property
    def attempt(self) -> int:
        """0 on the first delivery, then one more per redelivery."""
        return self._claim.attempt

    @property
    def name(self) -> str:
        """The message's file name in the spool."""
        return self._claim.name

    def ack(self) -> bool:
        """Remove the message for good; False if its lease had expired meanwhile."""
        return self._claim.ack()

    def release(self) -> None:
        """Put the message back for another attempt."""
        self._claim.release()

    @property
    def done(self) -> bool:
        """True once acked or released."""
        return self._claim.done


class SpoolChannel(Channel):
    """A channel onto a spool directory: ``send`` adds, ``recv`` claims (at-least-once)."""

    def __init__(self, store: SpoolStore, wire: WireFormat, url: str, cfg: SpoolConfig) -> None:
        self.url = url
        self._store = store
        self._wire = wire
        self._encode = wire.codec.encode
        self._decode = wire.decode
        self._max_frame = wire.max_frame
        self._cfg = cfg
        self._watcher = cfg.watcher(store.new)
        # close() wakes a waiting recv through this descriptor (a pipe where no eventfd)
        if hasattr(os, "eventfd"):
            self._wake = self._wake_w = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            self._wake, self._wake_w = os.pipe()
        self._recv_lock = threading.Lock()
        self._unacked: list[Claim] = []
        self._claims: set[Claim] = set()  # explicit deliveries not yet finished
        self._next_reap = 0.0
        self._closed = False
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    @property
    def wakeups(self) -> str:
        """How waiting works here: ``"inotify"``, or ``"polling"`` (and why, if so)."""
        w = self._watcher
        return w.mode if w.mode == "inotify" else f"polling every {w.poll_interval} s ({w.reason})"

    @property
    def store(self) -> SpoolStore:
        """The directory underneath (``counts()`` shows new/cur/dead/tmp)."""
        return self._store

    # -- sending ----------------------------------------------------------------------------
    def _pack(self, obj: Any) -> Any:
        data = self._encode(obj)
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        if size > self._max_frame:
            raise FrameTooLarge(
                f"message of {size} bytes not sent to {self.url}: over max_frame="
                f"{self._max_frame} (consumers would refuse it); raise max_frame= on both sides",
                size=size,
                limit=self._max_frame,
                endpoint=self.url,
            )
        return data

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Add a message to the spool; it is on disk (fsync'd) when this returns.

        ``timeout`` is accepted for the common API; a spool never waits for a reader.
        """
        data = self._pack(obj)
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        self._store.put(data)
        self._sent += 1
        self._bytes_sent += memoryview(data).nbytes

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        """Add several messages with one directory sync (faster than one ``send`` each)."""
        items = [self._pack(o) for o in objs]
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if items:
            self._store.put_many(items)
            self._sent += len(items)
            self._bytes_sent += sum(memoryview(d).nbytes for d in items)

    # -- receiving --------------------------------------------------------------------------
    def recv(self, *, timeout: float | None = None) -> Any:
        """Claim the next message; the previous one from ``recv`` is acknowledged now."""
        with self._recv_lock:
            self._ack_unacked()
            claim = self._wait_claim(timeout)
            msg = self._open(claim)
            self._unacked.append(claim)
            return msg

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        """Wait for one message, then claim those already waiting (up to ``max_messages``,
        at most 64); all are acknowledged at the next ``recv``/``recv_many``/``close``."""
        limit = min(max_messages or BATCH, BATCH)
        with self._recv_lock:
            self._ack_unacked()
            first = self._wait_claim(timeout)
            out = [self._open(first)]
            self._unacked.append(first)
            while len(out) < limit:
                try:
                    claim = self._store.try_claim(self._max_frame)
                except FrameTooLarge:
                    break
                if claim is None:
                    break
                try:
                    out.append(self._open(claim))
                except IpcwireError:
                    break
                self._unacked.append(claim)
            return out

    def claim(self, *, timeout: float | None = None) -> Delivery:
        """Claim the next message for explicit :meth:`Delivery.ack`/``release``.

        Raises:
            Timeout, ChannelClosed, FrameTooLarge, RemoteProtocolError (the message could
            not be decoded; it was moved to dead/).
        """
        with self._recv_lock:
            claim = self._wait_claim(timeout)
            msg = self._open(claim)
            self._claims.add(claim)
            return Delivery(claim, msg)

    def _open(self, claim: Claim) -> Any:
        try:
            msg = self._decode(memoryview(claim.data))
        except IpcwireError:
            claim.done = True
            self._store._bury(claim.name, f"it does not decode as {self._wire.codec.name}")
            os.close(claim.fd)
            raise
        self._received += 1
        self._bytes_received += len(claim.data)
        return msg

    def _ack_unacked(self) -> None:
        for claim in self._unacked:
            claim.ack()
        self._unacked.clear()

    def _wait_claim(self, timeout: float | None) -> Claim:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            now = time.monotonic()
            if now >= self._next_reap:
                self._store.reap()
                self._next_reap = now + self._cfg.reap_interval
            claim = self._store.try_claim(self._max_frame)
            if claim is not None:
                return claim
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise Timeout(
                    f"no message in {self.url} within {timeout} s"
                    if timeout
                    else f"no message in {self.url} yet",
                    endpoint=self.url,
                )
            wait = self._next_reap - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            if self._watcher.wait(max(wait, 0.0), self._wake):
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        """Acknowledge what ``recv`` returned, release unfinished ``claim()`` deliveries."""
        self._close(ack=True)

    def _close(self, *, ack: bool) -> None:
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, (1).to_bytes(8, sys.byteorder))
        with self._recv_lock:
            for claim in self._unacked:
                if ack:
                    claim.ack()
                else:
                    claim.release()
            self._unacked.clear()
            for claim in self._claims:
                claim.release()
            self._claims.clear()
            self._watcher.close()
            self._store.close()
            os.close(self._wake)
            if self._wake_w != self._wake:
                os.close(self._wake_w)

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # leaving by an exception: the message being processed is redelivered, not lost
        self._close(ack=et is None)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return PeerInfo(address=self._store.path)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
        )


def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> SpoolChannel:
    """Open the spool at ``spool:///dir`` (created if missing, mode 0700).

    Options: ``fsync`` (default True), ``lease`` (seconds a live consumer may hold a message;
    default: as long as it lives), ``max_attempts`` (then dead/), ``reap_interval``,
    ``poll_interval`` (when inotify is unavailable), ``watch`` ("auto", "inotify", or
    "polling", which a spool on NFS written from other hosts needs), ``mode``. ``timeout``
    and ``reconnect`` are accepted and ignored: opening a spool never waits.
    """
    cfg = connect_options(endpoint, kw)
    wire = options.wire()
    return SpoolChannel(cfg.store(endpoint.url), wire, endpoint.url, cfg)


class SpoolListener(Listener):
    """The consumer side of a spool, in the listener shape.

    A spool has no connections: ``accept()`` returns one channel onto the spool at once, then
    waits until the listener is closed (there is never a second "client"). ``serve(handler)``
    therefore runs ``handler`` once, with that channel.
    """

    def __init__(self, endpoint: Endpoint, options: ChannelOptions, cfg: SpoolConfig) -> None:
        self.url = endpoint.url
        self._endpoint = endpoint
        self._options = options
        self._cfg = cfg
        self._store: SpoolStore | None = cfg.store(endpoint.url)  # creates the directory
        self._closed = False
        self._done = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def accept(self, *, timeout: float | None = None) -> Channel:
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        store, self._store = self._store, None
        if store is not None:
            return SpoolChannel(store, self._options.wire(), self.url, self._cfg)
        if not self._done.wait(timeout):
            raise Timeout(
                f"{self.url}: a spool has one channel, already accepted; no other comes",
                endpoint=self.url,
            )
        raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._store is not None:
            self._store.close()
            self._store = None
        self._done.set()


def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> SpoolListener:
    """Create (if needed) the spool at ``spool:///dir`` and return its consumer listener;
    the options are those of :func:`connect`, plus ``backlog`` (accepted, ignored)."""
    cfg = listen_options(endpoint, kw)
    return SpoolListener(endpoint, options, cfg)
