"""Shared memory, blocking driver: the channel (:class:`ShmChannel`), two rings and the
liveness socket (``_link.py``); connecting and listening are ``blocking.py``'s.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ipcwire._core.ending import error_reason
from ipcwire._core.wire import WireFormat, decode_batch, take_held
from ipcwire.channel import Channel, ChannelStatistics, PeerInfo, closed_error
from ipcwire.errors import (
    ChannelClosed,
)
from ipcwire.shm._link import Link

__all__ = ["ShmChannel"]


class ShmChannel(Channel):
    """A channel over a pair of shared-memory rings.

    Besides the channel API: zero-copy :meth:`loan` / :meth:`send_loan` (or :meth:`loaned`)
    and :meth:`recv_view` / :meth:`release_view`, and :attr:`wait_policy`.
    """

    def __init__(self, link: Link, wire: WireFormat, url: str, peer: PeerInfo | None) -> None:
        self.url = url
        self._link = link
        self._tx = tx = link.tx
        self._rx = rx = link.rx
        self._wire = wire
        self._peer = peer
        tx.max_send = wire.send_limit
        rx.max_message = wire.max_frame
        if wire.is_raw:  # bytes in, bytes out: straight into the C extension
            self.send = tx.send  # type: ignore[method-assign,assignment]
            self.recv = rx.recv  # type: ignore[method-assign]
        self._encode: Callable[[Any], Any] = wire.encoder
        self._decode: Callable[[Any], Any] = wire.decode
        # what a recv_many batch left after a message that did not decode (decode_batch)
        self._held: deque[Any] = deque()

    # -- the channel API ----------------------------------------------------------------------
    # (a closed ring's ChannelClosed is re-raised as the channel's: it says why, when a
    # request() closed it; the raw fast paths bound in __init__ are unbound by close())
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        try:
            self._tx.send(self._encode(obj), timeout)
        except ChannelClosed:
            raise closed_error(self) from None

    def recv(self, *, timeout: float | None = None) -> Any:
        if self._held and not self._link.closed:
            return take_held(self._decode, self._held, 1)[0]
        try:
            return self._decode(self._rx.recv(timeout))
        except ChannelClosed:
            raise closed_error(self) from None

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        if self._wire.is_raw:
            items = objs if isinstance(objs, list | tuple) else list(objs)
        else:
            items = [self._encode(obj) for obj in objs]
        if items:
            try:
                self._tx.send_many(items, timeout)
            except ChannelClosed:
                raise closed_error(self) from None

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        if self._held and not self._link.closed:
            return take_held(self._decode, self._held, max_messages)
        try:
            got: list[Any] = self._rx.recv_many(max_messages or 0, timeout)
        except ChannelClosed:
            raise closed_error(self) from None
        if self._wire.is_raw:
            return got
        return decode_batch(self._decode, got, self._held)

    def close(self) -> None:
        self._unbind_fast_paths()
        self._link.close()

    def _close_after(self, exc: BaseException | None) -> None:
        # a with block (or serve() handler) left by an exception: the peer is told its type
        self._unbind_fast_paths()
        self._link.close(error_reason(exc))

    def _unbind_fast_paths(self) -> None:
        """The raw channel's send/recv are the ring's own (bound in __init__): once closed,
        the methods above answer, in the channel's words."""
        self.__dict__.pop("send", None)
        self.__dict__.pop("recv", None)

    @property
    def closed(self) -> bool:
        return self._link.closed

    @property
    def wire(self) -> WireFormat:
        """The codec in use (``wire.send_limit`` is the peer's max_frame)."""
        return self._wire

    def statistics(self) -> ChannelStatistics:
        tx, rx = self._tx, self._rx
        return ChannelStatistics(
            messages_sent=tx.messages,
            messages_received=rx.messages,
            bytes_sent=tx.nbytes,
            bytes_received=rx.nbytes,
            buffered_bytes=rx.buffered,
        )

    # -- shared memory only -------------------------------------------------------------------
    @property
    def wait_policy(self) -> str:
        """How blocked calls wait: ``"spin"``, ``"park"`` or ``"hybrid"`` (settable)."""
        return self._rx.policy

    @wait_policy.setter
    def wait_policy(self, policy: str) -> None:
        self._tx.policy = policy
        self._rx.policy = policy

    @property
    def capacity(self) -> tuple[int, int]:
        """Data bytes of the (sending, receiving) rings."""
        return self._tx.capacity, self._rx.capacity

    def loan(self, size: int, *, timeout: float | None = None) -> memoryview:
        """A writable view of ``size`` bytes inside the sending ring (waits for room).

        Fill it, then :meth:`send_loan` (or :meth:`abort_loan`); until then ``send()`` and
        ``loan()`` are refused, also when filling it raised, so prefer :meth:`loaned`, which
        ends the loan either way. Raw bytes: the codec is not involved (for a numpy array,
        ``np.copyto(np.frombuffer(buf, a.dtype).reshape(a.shape), a)``). At most the ring's
        capacity less 16 bytes (``capacity[0] - 16``); a loan that large waits until the
        ring is empty.

        Raises:
            FrameTooLarge: over the ring's capacity less 16, or over the peer's max_frame.
            Timeout, ChannelBroken, ChannelClosed: as for send.
        """
        tx = self._tx
        if tx.max_record < size <= tx.max_send:
            raise self._link.loan_too_large(size)
        return tx.loan(size, timeout)

    def send_loan(self, size: int | None = None) -> None:
        """Send the loaned bytes (the first ``size`` of them, if given); the view dies."""
        self._tx.commit(size)

    def abort_loan(self) -> None:
        """Give the loan back unsent."""
        self._tx.abort()

    @contextlib.contextmanager
    def loaned(self, size: int, *, timeout: float | None = None) -> Iterator[memoryview]:
        """``with ch.loaned(n) as buf: buf[...] = ...``: sent on exit, given back on error."""
        buf = self.loan(size, timeout=timeout)
        try:
            yield buf
        except BaseException:
            self._tx.abort()
            raise
        self._tx.commit(None)

    def recv_view(self, *, timeout: float | None = None) -> memoryview:
        """The next message as a read-only view into the ring, without copying.

        Valid until :meth:`release_view` or the next receive on this channel, which releases
        it (the space goes back to the sender). Arrays made from it must not be used after
        that. A message longer than a quarter ring arrives in fragments and is reassembled,
        so its view is of a copy.
        """
        return self._rx.view(timeout)

    def release_view(self) -> None:
        """Hand the space of the last :meth:`recv_view` back to the sender."""
        self._rx.release_view()
