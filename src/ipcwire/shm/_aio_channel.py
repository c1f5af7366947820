"""The shared-memory asyncio channel: :class:`AioShmChannel`, a connected pair of rings.

Native asyncio, never a thread: the rings are only ever called without waiting
(``timeout=0``); when a ring is empty (or full) the channel sets the ring's "waiting" flag
(``arm``) and awaits its eventfd, which the peer writes only because that flag is set. The
liveness socket is watched too, so a dead peer wakes every waiter at once. The wait policy
does not apply here (an event loop must not spin); the peer may use any policy.

Separate from :mod:`ipcwire.shm.aio`, which sets connections up (``connect``, the listener:
the handshake and the handing over of the rings); this is what runs once a connection is set
up. ``ipcwire.shm.aio.AioShmChannel`` stays its public import path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

from ipcwire._core.ending import error_reason
from ipcwire._core.wire import WireFormat, decode_batch, take_held
from ipcwire._deadline import limit
from ipcwire.aio._timeouts import within_at
from ipcwire.aio._without_loop import handed_to_loop, not_this_loop
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import ChannelStatistics, PeerInfo, closed_error
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    FrameTooLarge,
    LocalProtocolError,
    Timeout,
)
from ipcwire.shm._link import Link

__all__ = ["AioShmChannel"]

_RECORD: Final = 16


class AioShmChannel(AioChannel):
    """A channel over a pair of shared-memory rings (asyncio); zero-copy as in
    :class:`ipcwire.shm.blocking.ShmChannel` (``loan``, ``loaned``, ``recv_view``), with
    ``await`` where it may wait.

    No ``wait_policy``: this channel never waits in the ring (an event loop must not spin or
    block); it awaits the doorbell with ``add_reader``, so spin, park and hybrid would all be
    the same here. The peer's policy is its own."""

    def __init__(
        self,
        link: Link,
        wire: WireFormat,
        url: str,
        peer: PeerInfo | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.url = url
        self._link = link
        self._tx = link.tx
        self._rx = link.rx
        self._wire = wire
        self._raw = wire.is_raw
        self._encode: Callable[[Any], Any] = wire.encoder
        self._decode: Callable[[Any], Any] = wire.decode
        # what a recv_many batch left after a message that did not decode (decode_batch)
        self._held: deque[Any] = deque()
        self._peer = peer
        self._loop = loop
        self._tx.max_send = wire.send_limit
        self._rx.max_message = wire.max_frame
        self._send_lock = asyncio.Lock()  # senders take turns (documented)
        self._receiving = False  # a task is receiving: a second one is refused (not queued)
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._send_broken = False
        # True once the peer's end is seen gone (a hang-up, or a doorbell at its end): from
        # then on nothing rings, so no wait parks (the next ring call says how it ended)
        self._gone = False
        self._watched = [link.rx_fd, link.tx_fd, link.sock.fileno()]
        loop.add_reader(link.rx_fd, self._on_event, link.rx_bell, "rx")
        loop.add_reader(link.tx_fd, self._on_event, link.tx_bell, "tx")
        loop.add_reader(link.sock.fileno(), self._on_hangup)

    # -- waking -------------------------------------------------------------------------------
    def _on_event(self, bell: socket.socket, which: str) -> None:
        if not Link.drain(bell):
            # the peer's end is gone (readable forever from now on): look at the ring, whose
            # next call finds out whether the peer said goodbye or died
            self._gone = True
            self._unwatch(bell.fileno())
            self._wake(which)
            self._wake("rx" if which == "tx" else "tx")
            return
        self._wake(which)

    def _on_hangup(self) -> None:
        # the peer is gone (after the setup it never writes): readable forever from now on
        self._gone = True
        self._unwatch(self._link.sock.fileno())
        self._wake("rx")
        self._wake("tx")

    def _wake(self, which: str) -> None:
        fut = self._waiters.get(which)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _unwatch(self, fd: int) -> None:
        if fd in self._watched:
            self._watched.remove(fd)
            self._loop.remove_reader(fd)

    async def _park(self, which: str, deadline: float | None) -> bool:
        """Wait for the eventfd (or a hang-up, or close). False when the deadline passed.

        Not at all once the peer is gone: the hang-up may have been seen while no call waited
        (a recv() yielding between a ring's worth of fragments), and woke nobody then."""
        if self._gone:
            if not self._link.closed:
                (self._tx if which == "tx" else self._rx).disarm()
            return deadline is None or self._loop.time() < deadline
        if (wrong := not_this_loop(self._loop, self.url)) is not None:
            if not self._link.closed:
                (self._tx if which == "tx" else self._rx).disarm()
            raise wrong
        fut = self._loop.create_future()
        self._waiters[which] = fut
        timer = None
        if deadline is not None:
            timer = self._loop.call_at(deadline, self._wake, which)
        try:
            await fut
        finally:
            self._waiters.pop(which, None)
            if timer is not None:
                timer.cancel()
            ring = self._tx if which == "tx" else self._rx
            if not self._link.closed:
                ring.disarm()
        return deadline is None or self._loop.time() < deadline

    def _deadline(self, timeout: float | None) -> float | None:
        wait = limit(timeout, self.url)  # (NaN: ConfigurationError; a timer at NaN spins)
        return None if wait is None else self._loop.time() + max(wait, 0.0)

    async def _lock(self, lock: asyncio.Lock, deadline: float | None) -> None:
        """Take ``lock`` (after another task's call on this channel), waiting no longer than
        ``deadline``: as the ring serialises threads, each within its own timeout."""
        if not lock.locked():
            await lock.acquire()  # (free: at once)
            return
        if (wrong := not_this_loop(self._loop, self.url)) is not None:
            raise wrong
        if deadline is None:
            await lock.acquire()
            return
        try:
            async with within_at(deadline):
                await lock.acquire()
        except TimeoutError:
            raise Timeout(
                f"{self.url}: another task's call on this channel did not finish in time",
                endpoint=self.url,
            ) from None

    # -- receiving ----------------------------------------------------------------------------
    async def _take(self, get: Callable[[float], Any], deadline: float | None) -> Any:
        """``get(0)`` until it returns; park on the rx eventfd in between."""
        try:
            try:
                return get(0)
            except Timeout:
                if deadline is not None and self._loop.time() >= deadline:
                    raise
            while True:
                if not self._rx.arm() and not await self._park("rx", deadline):
                    return get(0)  # the last chance; raises Timeout if still nothing
                try:
                    return get(0)
                except Timeout:
                    # something there but no whole message: a message still arriving, or a peer
                    # that never lets the ring run dry (each get(0) stops after a ring's worth)
                    if deadline is not None and self._loop.time() >= deadline:
                        raise
                    await asyncio.sleep(0)  # the other tasks of this loop meanwhile
        except ChannelClosed:  # (the ring's: the channel's words, and why)
            raise closed_error(self) from None

    def _start_receiving(self) -> None:
        """Mark this channel as being received on; a second task's receive meanwhile is
        refused at once, as on every other mechanism (two receivers would each get some of
        the messages, in no order anyone chose)."""
        if self._receiving:
            if self._link.closed:
                raise closed_error(self)
            raise LocalProtocolError(
                f"another task is already receiving on {self.url}; receive from one task "
                f"(and fan out with a queue), or open one channel per task",
                endpoint=self.url,
            )
        self._receiving = True

    def _recv_timeout(self, timeout: float | None) -> Timeout:
        return Timeout(
            f"no message from {self.url} "
            + ("yet" if timeout is not None and timeout <= 0 else f"within {timeout} s"),
            endpoint=self.url,
        )

    async def _receive(self, get: Callable[[float], Any], timeout: float | None) -> Any:
        """``get`` (a ring's receive) through :meth:`_take`, one task at a time."""
        deadline = self._deadline(timeout)
        self._start_receiving()
        try:
            return await self._take(get, deadline)
        except Timeout:
            raise self._recv_timeout(timeout) from None
        finally:
            self._receiving = False

    async def recv(self, *, timeout: float | None = None) -> Any:
        if self._held and not self._link.closed:
            return take_held(self._decode, self._held, 1)[0]
        data = await self._receive(self._rx.recv, timeout)
        return data if self._raw else self._decode(data)

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        if self._held and not self._link.closed:
            return take_held(self._decode, self._held, max_messages)
        rx = self._rx
        got: list[Any] = await self._receive(lambda t: rx.recv_many(max_messages or 0, t), timeout)
        return got if self._raw else decode_batch(self._decode, got, self._held)

    async def recv_view(self, *, timeout: float | None = None) -> memoryview:
        """The next message as a read-only view into the ring (see the blocking channel)."""
        view: memoryview = await self._receive(self._rx.view, timeout)
        return view

    def release_view(self) -> None:
        """Hand the space of the last :meth:`recv_view` back to the sender."""
        self._rx.release_view()

    # -- sending ------------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = obj if self._raw else self._encode(obj)
        deadline = self._deadline(timeout)
        await self._lock(self._send_lock, deadline)
        try:
            await self._put(data, deadline)
        finally:
            self._send_lock.release()

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        items = [obj if self._raw else self._encode(obj) for obj in objs]
        self._refuse_before_writing(items)
        deadline = self._deadline(timeout)  # one for the whole batch, as the ring's
        await self._lock(self._send_lock, deadline)
        try:
            for done, data in enumerate(items):
                try:
                    await self._put(data, deadline)
                except Timeout:
                    if done == 0 or self._send_broken:
                        raise
                    # those before it are delivered: say so, or a retried batch duplicates them
                    raise Timeout(
                        f"send_many to {self.url} timed out after {done} of its {len(items)} "
                        f"messages: the ring is full and the peer is not reading; those {done} "
                        f"were sent, the rest were not",
                        endpoint=self.url,
                    ) from None
        finally:
            self._send_lock.release()

    def _check_in_step(self) -> None:
        if self._send_broken:
            raise ChannelBroken(
                f"an earlier send to {self.url} stopped part-way through a message; the ring "
                f"is out of step, so open a new channel",
                endpoint=self.url,
            )

    def _refuse_before_writing(self, items: list[Any]) -> None:
        """What the blocking send_many (the ring's) refuses before it writes anything: an
        item that is not bytes-like, or one over the peer's max_frame; else a batch would be
        sent only up to the bad item."""
        limit = self._tx.max_send
        for data in items:
            try:
                size = memoryview(data).nbytes
            except TypeError:
                raise LocalProtocolError(
                    f"the bytes codec sends bytes-like objects, not {type(data).__name__}; "
                    f"encode it first or open the channel with codec='json' or 'msgpack'",
                    endpoint=self.url,
                ) from None
            if size > limit:
                raise FrameTooLarge(
                    f"{self.url}: a message of {size} bytes was not sent: over the peer's "
                    f"limit of {limit} bytes (its max_frame); raise max_frame= on both sides, "
                    f"or split the message",
                    size=size,
                    limit=limit,
                    endpoint=self.url,
                )

    async def _put(self, data: Any, deadline: float | None) -> None:
        """Send one message; ``deadline`` is the loop's time (None: no limit)."""
        try:
            self._check_in_step()
            tx = self._tx
            off = tx.send_some(data, 0)  # checks the type and the size first
            size = len(data) if type(data) is bytes else memoryview(data).nbytes
            if off == size:
                return
            frag = tx.capacity // 4 - _RECORD
            try:
                while off != size:
                    start = max(off, 0)
                    chunk = size - start if size <= frag else min(frag, size - start)
                    if not tx.arm(chunk) and not await self._park("tx", deadline):
                        why = (
                            " part-way through a long message; the channel cannot send any more"
                            if off > 0
                            else ": the ring is full and the peer is not reading; nothing was sent"
                        )
                        raise Timeout(f"send to {self.url} timed out{why}", endpoint=self.url)
                    off = max(tx.send_some(data, start), off)
            except BaseException:
                # a timeout, an error, or the task cancelled (asyncio.timeout() around the send)
                # part-way through a long message: the fragments already in the ring are the
                # start of a message that will never end, so nothing more may follow them
                if off > 0:
                    self._send_broken = True
                raise
        except ChannelClosed:  # (the ring's: the channel's words, and why)
            raise closed_error(self) from None

    async def loan(self, size: int, *, timeout: float | None = None) -> memoryview:
        """A writable view of ``size`` bytes inside the sending ring; then :meth:`send_loan`."""
        tx = self._tx
        if tx.max_record < size <= tx.max_send:
            raise self._link.loan_too_large(size)
        deadline = self._deadline(timeout)
        await self._lock(self._send_lock, deadline)
        try:
            self._check_in_step()
            try:
                return tx.loan(size, 0)
            except Timeout:
                if deadline is not None and self._loop.time() >= deadline:
                    raise
            while True:
                if not tx.arm(size) and not await self._park("tx", deadline):
                    return tx.loan(size, 0)
                with contextlib.suppress(Timeout):
                    return tx.loan(size, 0)
        finally:
            self._send_lock.release()

    def send_loan(self, size: int | None = None) -> None:
        """Send the loaned bytes (the first ``size`` of them, if given)."""
        self._tx.commit(size)

    def abort_loan(self) -> None:
        """Give the loan back unsent."""
        self._tx.abort()

    @contextlib.asynccontextmanager
    async def loaned(self, size: int, *, timeout: float | None = None) -> AsyncIterator[memoryview]:
        """``async with ch.loaned(n) as buf: ...``: a loan (waited for as :meth:`loan`
        waits, without blocking the loop), sent as the block ends; given back, nothing sent,
        when the block raises or its task is cancelled, so no loan is left open.

        Raises:
            FrameTooLarge: over the ring's capacity less 16, or over the peer's max_frame.
            Timeout, ChannelBroken, ChannelClosed: as for send.
        """
        buf = await self.loan(size, timeout=timeout)
        try:
            yield buf
        except BaseException:
            self._tx.abort()
            raise
        self._tx.commit(None)

    # -- the rest -----------------------------------------------------------------------------
    def close(self) -> None:
        self._end("")

    def _end(self, reason: str) -> None:
        """Close; ``reason`` (not empty): after an error, which the peer is told. From
        another thread than the running loop's, the close is handed to the loop: the readers
        it watches and the futures a recv() waits on are the loop's (done in that thread, a
        waiting recv() slept on until its timeout)."""
        if self._link.closed or handed_to_loop(self._loop, lambda: self._end(reason)):
            return
        for fd in list(self._watched):
            self._unwatch(fd)
        self._link.close(reason)
        self._wake("rx")
        self._wake("tx")

    async def aclose(self) -> None:
        self.close()

    async def _aclose_after(self, exc: BaseException | None) -> None:
        # an async with block (or serve() handler) left by an exception: the peer is told
        self._end(error_reason(exc))

    @property
    def closed(self) -> bool:
        return self._link.closed

    @property
    def wire(self) -> WireFormat:
        return self._wire

    @property
    def capacity(self) -> tuple[int, int]:
        """Data bytes of the (sending, receiving) rings."""
        return self._tx.capacity, self._rx.capacity

    def statistics(self) -> ChannelStatistics:
        tx, rx = self._tx, self._rx
        return ChannelStatistics(
            messages_sent=tx.messages,
            messages_received=rx.messages,
            bytes_sent=tx.nbytes,
            bytes_received=rx.nbytes,
            buffered_bytes=rx.buffered,
        )
