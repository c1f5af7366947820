"""What both spool drivers' channels and listeners keep and decide without waiting.

The blocking driver (``poll`` on the inotify descriptor and a wake-up descriptor, a receive
lock) and the asyncio driver (the descriptor in the event loop, an ``asyncio.Event``) differ
only in how they wait for a message, how ``close()`` wakes a waiter, and whether a send's
fsync runs in an executor. The rest is here once: :class:`ChannelCore` (the store and its
watcher, packing with the ``max_frame`` check, opening a claimed message and burying one that
does not decode, the bookkeeping of what ``recv`` must ack and what ``claim()`` handed out,
the reap schedule, the timeout decision, the counters) and :class:`ListenerCore` (the one
channel a spool listener hands out). Nothing here waits: the store calls are ``try_claim``,
``reap``, ``ack`` and ``release``, which never block for another process.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import not_a_number
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import ChannelClosed, FrameTooLarge, IpcwireError, Timeout
from ipcwire.options import ChannelOptions
from ipcwire.spool._consume import Claim
from ipcwire.spool._options import SpoolConfig
from ipcwire.spool._store import SpoolStore

__all__ = ["BATCH", "ChannelCore", "Delivery", "ListenerCore"]

log = logging.getLogger("ipcwire")

BATCH: Final = 64  # recv_many claims at most this many files at once (each holds an fd)


class Delivery:
    """A message claimed with :meth:`SpoolChannel.claim`: ``ack()`` when done, or
    ``release()`` to put it back. Closing the channel releases unfinished deliveries."""

    __slots__ = ("_claim", "_held", "message")

    def __init__(self, claim: Claim, message: Any, held: set[Claim]) -> None:
        self._claim = claim
        self._held = held  # the channel's unfinished claims, for close() to release
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
        """Remove the message for good; False if its lease had expired meanwhile, or it was
        released (by :meth:`release`, or by closing the channel): it will come again.

        Raises:
            PermissionDenied, ChannelBroken: the file system refused to remove it; it comes
                again (a reaper puts it back).
        """
        try:
            return self._claim.ack()
        finally:
            self._held.discard(self._claim)

    def release(self) -> None:
        """Put the message back for another attempt.

        Raises:
            PermissionDenied, ChannelBroken: the file system refused; it comes again all
                the same (a reaper puts it back).
        """
        try:
            self._claim.release()
        finally:
            self._held.discard(self._claim)

    @property
    def done(self) -> bool:
        """True once acked or released."""
        return self._claim.done


class ChannelCore:
    """A channel onto a spool directory, without the waiting.

    Subclasses add ``send``/``recv``/``claim`` and ``_close`` with their waits. To wait for a
    message they loop over :meth:`_prepare_claim`, ``self._store.try_claim(self._max_frame)``
    and :meth:`_wait_time`; ``_close`` calls :meth:`_settle`, takes the watcher's descriptor
    out of whatever waits on it, then calls :meth:`_close_files`.
    """

    url: str

    def __init__(self, store: SpoolStore, wire: WireFormat, url: str, cfg: SpoolConfig) -> None:
        self.url = url
        self._store = store
        self._wire = wire
        self._encode = wire.encoder
        self._decode = wire.decode
        self._max_frame = wire.max_frame
        self._cfg = cfg
        try:
            self._watcher = cfg.watcher(store.new)
        except BaseException:
            store.close()  # the channel owns the store from here: none is left open
            raise
        self._unacked: list[Claim] = []  # returned by recv/recv_many, acked at the next one
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

    def _closed_error(self) -> ChannelClosed:
        return ChannelClosed(f"{self.url} is closed", endpoint=self.url)

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

    def _pack_all(self, objs: Iterable[Any]) -> list[Any]:
        """The encoded messages, checked against ``max_frame``; ChannelClosed if closed."""
        items = [self._pack(o) for o in objs]
        if self._closed:
            raise self._closed_error()
        return items

    def _count_sent(self, items: list[Any]) -> None:
        self._sent += len(items)
        self._bytes_sent += sum(memoryview(d).nbytes for d in items)

    # -- receiving --------------------------------------------------------------------------
    def _open(self, claim: Claim) -> Any:
        """The claimed message, decoded; one that does not decode goes to dead/ (and raises)."""
        try:
            msg = self._decode(memoryview(claim.data))
        except IpcwireError:
            claim.bury(f"it does not decode as {self._wire.codec.name}")
            raise
        self._received += 1
        self._bytes_received += len(claim.data)
        return msg

    def _ack_unacked(self) -> None:
        """Ack what ``recv`` returned before; each one, even when one fails.

        Raises:
            PermissionDenied, ChannelBroken: the first ack the file system refused.
        """
        unacked, self._unacked = self._unacked, []
        error: IpcwireError | None = None
        for claim in unacked:
            try:
                claim.ack()
            except IpcwireError as exc:
                error = error or exc
        if error is not None:
            raise error

    def _batch(self, first: Claim, max_messages: int | None) -> list[Any]:
        """``first`` and the messages already waiting behind it (up to ``max_messages``, at
        most :data:`BATCH`), opened and left for the next ``recv`` to ack. A message over
        ``max_frame`` or that does not decode ends the batch (it went to dead/)."""
        limit = min(max_messages or BATCH, BATCH)
        out = [self._open(first)]
        self._unacked.append(first)
        while len(out) < limit:
            try:
                claim = self._store.try_claim(self._max_frame)
            except IpcwireError:
                # The messages already claimed are returned; what failed is either in dead/
                # or fails again at the next recv (raising then would lose this batch).
                break
            if claim is None:
                break
            try:
                out.append(self._open(claim))
            except IpcwireError:
                break
            self._unacked.append(claim)
        return out

    def _deliver(self, claim: Claim) -> Delivery:
        """The claimed message for explicit ack/release; close() releases it if unfinished."""
        msg = self._open(claim)
        self._claims.add(claim)
        return Delivery(claim, msg, self._claims)

    def _prepare_claim(self, now: float) -> None:
        """Before each try to claim: ChannelClosed if closed; when ``reap_interval`` has
        passed, put back the claims of consumers that died (``now`` on the driver's clock)."""
        if self._closed:
            raise self._closed_error()
        if now >= self._next_reap:
            self._store.reap()
            self._next_reap = now + self._cfg.reap_interval

    def _wait_time(self, now: float, deadline: float | None, timeout: float | None) -> float:
        """How long to wait for a wake-up before trying again: until the next reap or the
        deadline, whichever is first.

        Raises:
            Timeout: the deadline has passed.
        """
        if deadline is not None and math.isnan(deadline):
            raise not_a_number(self.url)
        if deadline is not None and now >= deadline:
            raise self._no_message(timeout)
        wait = self._next_reap - now
        if self._store.order_busy:  # a producer held .order: try again soon
            wait = min(wait, self._cfg.poll_interval)
        if deadline is not None:
            wait = min(wait, deadline - now)
        return max(wait, 0.0)

    def _no_message(self, timeout: float | None) -> Timeout:
        """The Timeout of a wait that got no message; when .order was held at the last try,
        it says so, with how many messages wait and who holds the lock."""
        within = f"within {timeout} s" if timeout else "yet"
        if not self._store.order_busy:
            return Timeout(f"no message in {self.url} {within}", endpoint=self.url)
        waiting = self._store.counts()["new"]  # (0 also when new/ cannot be read)
        head = (
            f"no message taken from {self.url} {within}: {waiting} message"
            f"{'s wait' if waiting != 1 else ' waits'} in new/, but"
            if waiting
            else f"no message in {self.url} {within}, and"
        )
        return Timeout(
            f"{head} {self._store.order_holder()} holds the spool's .order lock, so no "
            f"consumer can list new/ (a consumer holds it only while it lists new/, a producer "
            f"while it renames into it; one stopped there, by SIGSTOP or a debugger, or another "
            f"program keeps it): resume or end that process",
            endpoint=self.url,
        )

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        """Acknowledge what ``recv`` returned, release unfinished ``claim()`` deliveries."""
        self._close(ack=True)

    def _close_interrupted(self) -> None:
        """The close of a graceful shutdown that a signal started (``ipcwire.signals``): the
        message ``recv`` returned is being processed, not done, so it is released (delivered
        again, to this consumer's successor), not acknowledged."""
        self._close(ack=False)

    def _close(self, *, ack: bool) -> None:
        """The driver's close: ``ack=False`` when leaving a ``with`` block by an exception
        (the message being processed is then redelivered, not lost)."""
        raise NotImplementedError

    def _settle(self, *, ack: bool) -> None:
        """At close: ack (or, leaving by an exception, release) what ``recv`` returned;
        release unfinished ``claim()`` deliveries. What the file system refuses is logged,
        not raised: the rest is settled and closed all the same, and those messages come
        again (see :meth:`SpoolStore.left_in_cur`)."""
        unacked, self._unacked = self._unacked, []
        # A copy: deliveries acked or released meanwhile (other threads) leave the set.
        # Those the consumer is finishing right now are left to it (see Claim).
        claims = list(self._claims)
        self._claims.clear()
        for claim in unacked:
            self._settle_one(claim.ack if ack else claim.release)
        for claim in claims:
            self._settle_one(claim.release)

    def _settle_one(self, step: Callable[[], object]) -> None:
        try:
            step()
        except IpcwireError as exc:
            log.warning("closing %s: %s", self.url, exc)

    def _close_files(self) -> None:
        """Stop watching and close the store (the asyncio driver must first take the
        watcher's descriptor out of its event loop)."""
        self._watcher.close()
        self._store.close()

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


class ListenerCore:
    """The consumer side of a spool, without the waiting: the store is created at once, the
    first ``accept()`` gets the one channel onto it, later ones wait for close."""

    url: str

    def __init__(self, endpoint: Endpoint, options: ChannelOptions, cfg: SpoolConfig) -> None:
        self.url = endpoint.url
        self._options = options
        self._cfg = cfg
        # The one store (made now: this creates the directory), taken once, by the first
        # accept() or by close(). list.pop() is atomic: when both run at once in different
        # threads exactly one gets it, and neither waits for the other.
        self._stores: list[SpoolStore] = [cfg.store(endpoint.url)]
        self._closed = False
        self._closing = threading.Lock()  # taken once, by the close() that closes

    def _take_store(self) -> SpoolStore | None:
        """The store for the one channel, or None when it was already taken.

        Raises:
            ChannelClosed: the listener is closed (or being closed: close() took it).
        """
        if self._closed:
            raise self._closed_error()
        store = _pop(self._stores)
        if store is None and self._closed:
            raise self._closed_error()
        return store

    def _closed_error(self) -> ChannelClosed:
        return ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)

    def _no_other_channel(self) -> Timeout:
        return Timeout(
            f"{self.url}: a spool has one channel, already accepted; no other comes",
            endpoint=self.url,
        )

    def _close_store(self) -> bool:
        """Mark closed and close the store if no channel took it; False if already closed
        (or being closed by another thread)."""
        if not self._closing.acquire(blocking=False):
            return False
        self._closed = True
        store = _pop(self._stores)
        if store is not None:
            store.close()
        return True


def _pop(stores: list[SpoolStore]) -> SpoolStore | None:
    try:
        return stores.pop()
    except IndexError:
        return None
