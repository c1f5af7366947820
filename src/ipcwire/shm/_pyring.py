"""The shared-memory ring in pure Python: the fallback when the C extension is not built.

Same memory layout, record format and protocol as ``src/ipcwire/_ext/ring.c`` (read that
file's comments for the design), so a C end and a Python end interoperate. Slower (every
operation is interpreted), but correct: every index and record header read from shared memory
is validated before use, exactly as in C.

Memory ordering: CPython has no atomics, so this relies on what the hardware gives. Index
fields are read and written through ``memoryview.cast("Q")``, which CPython performs as one
aligned 8-byte load or store (atomic on 64-bit CPUs). On x86-64 (total store order) stores
are seen in program order and loads are not reordered with other loads, which gives the
release/acquire pairs for free; the one store-then-load pattern that needs a full fence (the
"waiting" flag handshake, see ring.c) gets it from a locked instruction: acquiring a
``threading.Lock``. Weakly ordered CPUs (ARM, POWER) need real fences, so there this fallback
refuses to run and asks for the C extension.
"""

from __future__ import annotations

import math
import os
import platform
import select
import struct
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    EndOfChannel,
    FrameTooLarge,
    LocalProtocolError,
    MechanismUnavailable,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.shm import _layout as L

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["PyRing", "init_ring"]

_REC: Final = struct.Struct("=IIQ")
_ALIVE_EVERY: Final = 0.005  # senders check the peer's liveness at most this often
_SPIN_CHECK: Final = 64  # spin iterations between clock/liveness checks
_TSO_MACHINES: Final = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
_fence_lock = threading.Lock()
_monotonic = time.monotonic


def _fence() -> None:
    """A full memory barrier on x86: acquiring a lock runs a locked instruction."""
    _fence_lock.acquire()
    _fence_lock.release()


def _align(n: int) -> int:
    return (n + L.ALIGN - 1) & ~(L.ALIGN - 1)


def _check_machine() -> None:
    if platform.machine().lower() not in _TSO_MACHINES:
        raise MechanismUnavailable(
            f"the pure-Python shared-memory ring needs x86 memory ordering; this is a "
            f"{platform.machine()} CPU: build the C extension (pip install ipcwire with a C "
            f"compiler available, without IPCWIRE_NO_EXT=1)"
        )


def init_ring(buffer: Buffer, capacity: int, offset: int = 0) -> None:
    """Write a fresh ring header at ``offset`` (the creator does this before sharing)."""
    mv = memoryview(buffer)
    try:
        if not (L.MIN_CAPACITY <= capacity <= L.MAX_CAPACITY) or capacity & (capacity - 1):
            raise ValueError("capacity must be a power of two from 4 KiB to 4 GiB")
        if offset < 0 or len(mv) - offset < L.HEADER_SIZE + capacity or offset % L.ALIGN:
            raise ValueError(
                "the buffer is too small for the ring, or the offset is not 16-aligned"
            )
        hdr = mv[offset : offset + L.HEADER_SIZE]
        hdr[:] = bytes(L.HEADER_SIZE)
        struct.pack_into("=QIIQ", hdr, 0, L.MAGIC, L.VERSION, L.HEADER_SIZE, capacity)
        hdr.release()
    finally:
        mv.release()


class _Wait:
    """How a blocked end waits: eventfds, the liveness socket, the policy."""

    def __init__(self, wait_fd: int, wake_fd: int, alive_fd: int, policy: str, spin_ns: int):
        self.wait_fd = wait_fd
        self.wake_fd = wake_fd
        self.alive_fd = alive_fd
        self.policy = policy
        self.spin_ns = spin_ns
        self.poller = select.poll()
        if wait_fd >= 0:
            self.poller.register(wait_fd, select.POLLIN)
        if alive_fd >= 0:
            self.poller.register(alive_fd, select.POLLIN | select.POLLRDHUP)
        self.alive_poller = select.poll()
        if alive_fd >= 0:
            self.alive_poller.register(alive_fd, select.POLLIN | select.POLLRDHUP)

    def signal(self) -> None:
        if self.wake_fd >= 0:
            try:
                os.eventfd_write(self.wake_fd, 1)
            except BlockingIOError:
                pass  # the counter is saturated: a wake-up is pending anyway

    def signal_self(self) -> None:
        if self.wait_fd >= 0:
            try:
                os.eventfd_write(self.wait_fd, 1)
            except BlockingIOError:
                pass

    def drain(self) -> None:
        try:
            os.eventfd_read(self.wait_fd)
        except BlockingIOError:
            pass

    def alive(self) -> bool:
        return self.alive_fd < 0 or not self.alive_poller.poll(0)

    def close(self) -> None:
        for name in ("wait_fd", "wake_fd", "alive_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


def _dup(fd: int, nonblock: bool = False) -> int:
    if fd < 0:
        return -1
    d = os.dup(fd)  # inheritable=False by default
    if nonblock:
        os.set_blocking(d, False)
    return d


class PyRing:
    """One end of a shared-memory ring; the same API as ``ipcwire._ext._native.Ring``."""

    def __init__(
        self,
        buffer: Buffer,
        role: str,
        *,
        offset: int = 0,
        size: int = -1,
        wait_fd: int = -1,
        wake_fd: int = -1,
        alive_fd: int = -1,
        policy: str = "hybrid",
        spin_ns: int = 50000,
        max_message: int = 64 * 1024 * 1024,
        name: str = "shm ring",
    ) -> None:
        _check_machine()
        if role not in ("producer", "consumer"):
            raise ValueError("role must be 'producer' or 'consumer'")
        if policy not in L.POLICIES:
            raise ValueError("policy must be 'spin', 'park' or 'hybrid'")
        if spin_ns < 0:
            raise ValueError("spin_ns must not be negative")
        self.name = name
        self.producer = role == "producer"
        self.max_message = max_message
        self.messages = 0
        self.nbytes = 0
        self._closed = False
        self._in_use = False
        self._corrupt: str | None = None
        self._send_broken = False
        self._loan: tuple[int, int, memoryview] | None = None  # (offset, size, view)
        self._view: tuple[int, memoryview] | None = None  # (record size, view)
        self._partial: bytearray | None = None
        self._partial_total = 0
        self._discarding = False
        self._alive_at = 0.0
        mv = memoryview(buffer)
        if mv.readonly:
            raise TypeError("the ring needs a writable buffer")
        end = len(mv) if size < 0 else offset + size
        if offset < 0 or end > len(mv):
            raise ValueError("offset/size outside the buffer")
        self._mv = mv
        region = mv[offset:end].cast("B")
        if len(region) < L.HEADER_SIZE:
            why: str | None = "the region is smaller than a ring header (512 bytes)"
        else:
            magic, version, header_size, capacity = struct.unpack_from("=QIIQ", region, 0)
            why = L.header_problem(magic, version, header_size, capacity, len(region))
        if why:
            region.release()
            mv.release()
            raise self._attach_error(why)
        cap: int = struct.unpack_from("=Q", region, 16)[0]
        self._u64 = region[: L.HEADER_SIZE].cast("Q")
        self._u32 = region[: L.HEADER_SIZE].cast("I")
        self._data = region[L.HEADER_SIZE : L.HEADER_SIZE + cap]
        region.release()
        tail: int = self._u64[L.TAIL]
        head: int = self._u64[L.HEAD]
        if tail < head or tail - head > cap or (tail | head) % L.ALIGN:
            for v in (self._u64, self._u32, self._data, mv):
                v.release()
            raise self._attach_error("head/tail indices out of range")
        self.capacity = cap
        self._mask = cap - 1
        self.max_record = cap // 2 - L.RECORD_HEADER
        self._fragment = cap // 4 - L.RECORD_HEADER
        self._pos: int = tail if self.producer else head
        self._pub: int = self._pos
        self._peer: int = head if self.producer else tail
        self._w = _Wait(
            _dup(wait_fd, nonblock=True), _dup(wake_fd), _dup(alive_fd), policy, spin_ns
        )

    def _attach_error(self, why: str) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"{self.name}: cannot attach to the shared-memory ring: {why}", endpoint=self.name
        )

    # -- settings and state ------------------------------------------------------------------
    @property
    def role(self) -> str:
        return "producer" if self.producer else "consumer"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def policy(self) -> str:
        return self._w.policy

    @policy.setter
    def policy(self, value: str) -> None:
        if value not in L.POLICIES:
            raise ValueError("policy must be 'spin', 'park' or 'hybrid'")
        self._w.policy = value

    @property
    def spin_ns(self) -> int:
        return self._w.spin_ns

    @spin_ns.setter
    def spin_ns(self, value: int) -> None:
        if value < 0:
            raise ValueError("spin_ns must be a non-negative int")
        self._w.spin_ns = value

    @property
    def buffered(self) -> int:
        if self._closed or self._corrupt:
            return 0
        return self._pos - self._peer if self.producer else self._peer - self._pos

    @property
    def broken(self) -> bool:
        return self._corrupt is not None or self._send_broken

    # -- errors ------------------------------------------------------------------------------
    def _fail(self, why: str) -> RemoteProtocolError:
        self._corrupt = why
        return self._corrupt_error()

    def _corrupt_error(self) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"{self.name}: the shared-memory ring is corrupt ({self._corrupt}); the peer is "
            f"buggy or hostile, or something else wrote into the segment. Close the channel "
            f"and reconnect",
            endpoint=self.name,
        )

    def _closed_error(self) -> ChannelClosed:
        return ChannelClosed(f"{self.name} is closed", endpoint=self.name)

    def _gone_error(self) -> ChannelBroken:
        extra = "; a partly received message was discarded" if self._partial is not None else ""
        return ChannelBroken(
            f"the peer of {self.name} went away without closing the channel (its process "
            f"exited or was killed){extra}",
            endpoint=self.name,
        )

    def _timeout_error(self, partial: bool = False) -> Timeout:
        if not self.producer:
            return Timeout(f"no message from {self.name} within the timeout", endpoint=self.name)
        if partial:
            return Timeout(
                f"send to {self.name} timed out part-way through a long message (the peer is "
                f"not reading); the channel cannot be used for sending any more",
                endpoint=self.name,
            )
        return Timeout(
            f"send to {self.name} timed out: the ring is full and the peer is not reading; "
            f"nothing was sent",
            endpoint=self.name,
        )

    def _eof_error(self) -> EndOfChannel | ChannelBroken:
        if self.producer:
            return ChannelBroken(
                f"the peer closed {self.name}, so nothing more can be sent", endpoint=self.name
            )
        if self._partial is not None or self._discarding:
            return ChannelBroken(
                f"{self.name} closed in the middle of a message; the partial message was discarded",
                endpoint=self.name,
            )
        return EndOfChannel(f"{self.name}: the peer closed its end", endpoint=self.name)

    def _too_large(self, size: int, limit: int, loan: bool = False) -> FrameTooLarge:
        if loan:
            text = (
                f"{self.name}: a loan of {size} bytes is over the limit of {limit} (half the "
                f"ring); connect with a larger capacity=, or use send(), which splits long "
                f"messages"
            )
        else:
            text = (
                f"{self.name}: a message of {size} bytes arrived, over max_frame={limit}; it "
                f"was skipped. Raise max_frame= on this side"
            )
        return FrameTooLarge(text, size=size, limit=limit, endpoint=self.name)

    def _enter(self, producer: bool) -> None:
        if self._closed:
            raise self._closed_error()
        if producer != self.producer:
            can = "send" if self.producer else "receive"
            raise LocalProtocolError(
                f"this end of the ring of {self.name} can only {can}", endpoint=self.name
            )
        if self._in_use:
            raise LocalProtocolError(
                f"one end of the ring of {self.name} was used from two threads at once; "
                f"serialise the calls (the channel does that for you)",
                endpoint=self.name,
            )
        self._in_use = True

    def _leave(self) -> None:
        self._in_use = False
        if self._closed:
            self._free()

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        """None: forever; 0.0: do not wait; otherwise a time.monotonic() deadline."""
        if timeout is None:
            return None
        if math.isnan(timeout):
            raise ValueError("timeout must not be NaN")
        return 0.0 if timeout <= 0 else _monotonic() + timeout

    # -- waiting -----------------------------------------------------------------------------
    def _ready(self, need: int) -> bool:
        u64, u32 = self._u64, self._u32
        if self.producer:
            head = u64[L.HEAD]
            if head > self._pos or self._pos - head > self.capacity:
                return True  # nonsense: let _reserve report it
            return self.capacity - (self._pos - head) >= need or bool(u32[L.CONSUMER_CLOSED])
        return u64[L.TAIL] != self._pos or bool(u32[L.PRODUCER_CLOSED])

    def _wait(self, need: int, deadline: float | None) -> None:
        """Return when it is worth looking again; raise on timeout, peer death, close."""
        w = self._w
        if deadline == 0.0:
            if w.alive():
                raise self._timeout_error()
            if self._ready(need):
                return  # gone, but what it published before dying is still delivered
            raise self._gone_error()
        start = _monotonic()
        spin_until = start if w.policy == "park" else start + w.spin_ns / 1e9
        next_alive = start + 0.001
        if w.policy == "spin":
            spin_until = float("inf")
        i = 0
        while spin_until > start:
            if self._ready(need):
                return
            if self._closed:
                raise self._closed_error()
            i += 1
            if i % _SPIN_CHECK == 0:
                now = _monotonic()
                if deadline is not None and now >= deadline:
                    raise self._timeout_error()
                if now >= next_alive:
                    next_alive = now + 0.001
                    if not w.alive():
                        if self._ready(need):
                            return
                        raise self._gone_error()
                if now >= spin_until:
                    break
        self._park(need, deadline)

    def _park(self, need: int, deadline: float | None) -> None:
        w, u32 = self._w, self._u32
        flag = L.PRODUCER_WAITING if self.producer else L.CONSUMER_WAITING
        if self.producer:
            self._u64[L.PRODUCER_NEED] = need
        while True:
            u32[flag] = 1
            _fence()
            if self._ready(need):
                u32[flag] = 0
                return
            if self._closed:
                u32[flag] = 0
                raise self._closed_error()
            if deadline is None:
                ms = None
            else:
                left = deadline - _monotonic()
                if left <= 0:
                    u32[flag] = 0
                    raise self._timeout_error()
                ms = max(1, int(left * 1000 + 0.999))
            try:
                events = w.poller.poll(ms)
            finally:
                u32[flag] = 0
            for fd, _ in events:
                if fd == w.wait_fd:
                    w.drain()
                elif fd == w.alive_fd:
                    if self._ready(need):
                        return
                    raise self._gone_error()
            if self._closed:
                raise self._closed_error()

    # -- producer ----------------------------------------------------------------------------
    def _refresh_head(self) -> None:
        h = self._u64[L.HEAD]
        if h < self._peer or h > self._pub or h % L.ALIGN:
            raise self._fail("the consumer's head index is out of range")
        self._peer = h

    def _need(self, n: int) -> int:
        rec = _align(L.RECORD_HEADER + n)
        contig = self.capacity - (self._pos & self._mask)
        return contig if contig < rec else rec

    def _try_reserve(self, n: int) -> int | None:
        """Offset of the payload in the data area, or None when full."""
        if self._corrupt:
            raise self._corrupt_error()
        if self._u32[L.CONSUMER_CLOSED]:
            raise self._eof_error()
        cap = self.capacity
        rec = _align(L.RECORD_HEADER + n)
        off = self._pos & self._mask
        contig = cap - off
        if contig < rec:
            if cap - (self._pos - self._peer) < contig:
                self._refresh_head()
                if cap - (self._pos - self._peer) < contig:
                    return None
            _REC.pack_into(self._data, off, 0, L.PAD, 0)
            self._pos += contig
            off = 0
        if cap - (self._pos - self._peer) < rec:
            self._refresh_head()
            if cap - (self._pos - self._peer) < rec:
                return None
        return off + L.RECORD_HEADER

    def _reserve(self, n: int, deadline: float | None) -> int:
        while True:
            at = self._try_reserve(n)
            if at is not None:
                return at
            self._publish()
            self._wait(self._need(n), deadline)

    def _finish(self, n: int, kind: int, aux: int) -> None:
        _REC.pack_into(self._data, self._pos & self._mask, n, kind, aux)
        self._pos += _align(L.RECORD_HEADER + n)

    def _publish(self) -> None:
        if self._pos == self._pub:
            return
        self._u64[L.TAIL] = self._pos
        self._pub = self._pos
        _fence()
        if self._u32[L.CONSUMER_WAITING]:
            self._w.signal()

    def _put_record(self, data: memoryview, kind: int, aux: int, deadline: float | None) -> None:
        at = self._reserve(len(data), deadline)
        self._data[at : at + len(data)] = data
        self._finish(len(data), kind, aux)

    def _put_message(self, data: memoryview, deadline: float | None) -> None:
        n = len(data)
        frag = self._fragment
        if n <= frag:
            self._put_record(data, L.MSG, 0, deadline)
            return
        off = 0
        while off < n:
            chunk = min(frag, n - off)
            kind = L.FIRST if off == 0 else L.LAST if off + chunk == n else L.MIDDLE
            try:
                self._put_record(data[off : off + chunk], kind, n if off == 0 else 0, deadline)
            except Timeout:
                if off:
                    self._send_broken = True
                    raise self._timeout_error(partial=True) from None
                raise
            except BaseException:
                if off:
                    self._send_broken = True
                raise
            off += chunk
            self._publish()

    def _producer_ready(self) -> None:
        self._enter(True)
        if self._loan is not None:
            self._leave()
            raise LocalProtocolError(
                f"a loan on {self.name} is outstanding: commit or abort it first",
                endpoint=self.name,
            )
        if self._send_broken:
            self._leave()
            raise ChannelBroken(
                f"an earlier send to {self.name} stopped part-way through a message; the ring "
                f"is out of step, so open a new channel",
                endpoint=self.name,
            )

    def _check_alive(self) -> None:
        now = _monotonic()
        if now >= self._alive_at:
            self._alive_at = now + _ALIVE_EVERY
            if not self._w.alive():
                raise self._gone_error()

    def send(self, data: Buffer, timeout: float | None = None) -> None:
        deadline = self._deadline(timeout)
        with memoryview(data) as raw, raw.cast("B") as mv:
            self._producer_ready()
            try:
                self._check_alive()
                self._put_message(mv, deadline)
                self._publish()
                self.messages += 1
                self.nbytes += len(mv)
            finally:
                self._leave()

    def send_many(self, items: Sequence[Buffer], timeout: float | None = None) -> None:
        deadline = self._deadline(timeout)
        views = [memoryview(x).cast("B") for x in items]
        self._producer_ready()
        batch = self.capacity // 8
        try:
            self._check_alive()
            for mv in views:
                self._put_message(mv, deadline)
                self.messages += 1
                self.nbytes += len(mv)
                if self._pos - self._pub >= batch:
                    self._publish()
        finally:
            if not self._closed and not self._corrupt:
                self._publish()
            self._leave()

    def loan(self, size: int, timeout: float | None = None) -> memoryview:
        deadline = self._deadline(timeout)
        if size < 0:
            raise ValueError("loan size must not be negative")
        self._producer_ready()
        try:
            if size > self.max_record:
                raise self._too_large(size, self.max_record, loan=True)
            self._check_alive()
            at = self._reserve(size, deadline)
            view = self._data[at : at + size]
            self._loan = (at, size, view)
            return view
        finally:
            self._leave()

    def commit(self, size: int | None = None) -> None:
        self._enter(True)
        try:
            if self._loan is None:
                raise LocalProtocolError(
                    f"nothing is loaned on {self.name}: call loan(n) first", endpoint=self.name
                )
            _, loaned, view = self._loan
            n = loaned if size is None else size
            if not 0 <= n <= loaned:
                raise ValueError(f"commit({size}): the loan is {loaned} bytes")
            self._loan = None
            _release(view)
            self._finish(n, L.MSG, 0)
            self._publish()
            self.messages += 1
            self.nbytes += n
        finally:
            self._leave()

    def abort(self) -> None:
        if self._in_use:
            raise LocalProtocolError(
                f"abort() on {self.name} while another thread sends", endpoint=self.name
            )
        if self._loan is not None:
            _release(self._loan[2])
            self._loan = None

    # -- consumer ----------------------------------------------------------------------------
    def _refresh_tail(self) -> None:
        t = self._u64[L.TAIL]
        if t < self._peer or t - self._pos > self.capacity or t % L.ALIGN:
            raise self._fail("the producer's tail index is out of range")
        self._peer = t

    def _peek(self) -> tuple[int, int, int, int, int] | None:
        """(payload offset, len, kind, aux, record size) of the next record, or None."""
        if self._corrupt:
            raise self._corrupt_error()
        cap = self.capacity
        while True:
            avail = self._peer - self._pos
            if avail == 0:
                self._refresh_tail()
                avail = self._peer - self._pos
                if avail == 0:
                    return None
            off = self._pos & self._mask
            n, kind, aux = _REC.unpack_from(self._data, off)
            if kind == L.PAD:
                if cap - off > avail:
                    raise self._fail("a padding record covers bytes that were never written")
                self._pos += cap - off
                continue
            if kind > L.LAST:
                raise self._fail("unknown record kind")
            size = _align(L.RECORD_HEADER + n)
            if size > cap - off:
                raise self._fail("a record runs past the end of the ring")
            if size > avail:
                raise self._fail("a record is longer than the bytes written")
            return off + L.RECORD_HEADER, n, kind, aux, size

    def _next(self) -> tuple[int, int, int, int, int] | None:
        rec = self._peek()
        if rec is None and self._u32[L.PRODUCER_CLOSED]:
            rec = self._peek()  # tail was stored before the flag
            if rec is None:
                raise self._eof_error()
        return rec

    def _release(self) -> None:
        if self._pos == self._pub:
            return
        u64 = self._u64
        u64[L.HEAD] = self._pos
        self._pub = self._pos
        _fence()
        if self._u32[L.PRODUCER_WAITING]:
            used = u64[L.TAIL] - self._pos
            if used > self.capacity or self.capacity - used >= u64[L.PRODUCER_NEED]:
                self._w.signal()

    def _wait_record(self, deadline: float | None) -> tuple[int, int, int, int, int]:
        while True:
            rec = self._next()
            if rec is not None:
                return rec
            self._release()
            self._wait(0, deadline)

    def _end_view(self) -> None:
        if self._view is not None:
            size, view = self._view
            self._view = None
            _release(view)
            if not self._closed:
                self._pos += size
                self._release()

    def _get_message(self, deadline: float | None) -> bytes:
        data = self._data
        while True:
            at, n, kind, aux, size = self._wait_record(deadline)
            if self._discarding:
                if kind not in (L.MIDDLE, L.LAST):
                    raise self._fail("a skipped long message did not end with a last fragment")
                self._pos += size
                self._discarding = kind != L.LAST
                self._release()
                continue
            partial = self._partial
            if partial is None:
                if kind == L.MSG:
                    self._pos += size
                    if n > self.max_message:
                        raise self._too_large(n, self.max_message)
                    return bytes(data[at : at + n])
                if kind != L.FIRST:
                    raise self._fail("a continuation fragment arrived without a first fragment")
                if aux > self.max_message:
                    self._discarding = True
                    self._pos += size
                    raise self._too_large(aux, self.max_message)
                if n > aux:
                    raise self._fail("a first fragment is longer than its whole message")
                partial = self._partial = bytearray()
                self._partial_total = aux
            elif kind not in (L.MIDDLE, L.LAST):
                raise self._fail("a new message started before the previous one was complete")
            if n > self._partial_total - len(partial):
                raise self._fail("fragments add up to more than the announced length")
            partial += data[at : at + n]
            self._pos += size
            if kind == L.LAST:
                if len(partial) != self._partial_total:
                    raise self._fail("the last fragment came before the announced length")
                self._partial = None
                return bytes(partial)
            self._release()

    def _consumer_ready(self) -> None:
        self._enter(False)
        self._end_view()

    def recv(self, timeout: float | None = None) -> bytes:
        deadline = self._deadline(timeout)
        self._consumer_ready()
        try:
            out = self._get_message(deadline)
            self.messages += 1
            self.nbytes += len(out)
            return out
        finally:
            if not self._corrupt:
                self._release()
            self._leave()

    def recv_many(self, max_messages: int | None = 0, timeout: float | None = None) -> list[bytes]:
        deadline = self._deadline(timeout)
        self._consumer_ready()
        try:
            out = [self._get_message(deadline)]
            nbytes = len(out[0])
            batch = self.capacity // 8
            limit = max_messages or 0
            data = self._data
            while limit <= 0 or len(out) < limit:
                try:
                    rec = self._next()
                except (EndOfChannel, ChannelBroken, RemoteProtocolError):
                    break  # reported by the next call
                if rec is None or rec[2] != L.MSG or rec[1] > self.max_message:
                    break
                at, n, _, _, size = rec
                out.append(bytes(data[at : at + n]))
                nbytes += n
                self._pos += size
                if self._pos - self._pub >= batch:
                    self._release()
            self.messages += len(out)
            self.nbytes += nbytes
            return out
        finally:
            if not self._corrupt:
                self._release()
            self._leave()

    def view(self, timeout: float | None = None) -> memoryview:
        deadline = self._deadline(timeout)
        self._consumer_ready()
        try:
            at, n, kind, _, size = self._wait_record(deadline)
            if kind == L.MSG and self._partial is None and not self._discarding:
                if n > self.max_message:
                    self._pos += size
                    self._release()
                    raise self._too_large(n, self.max_message)
                v = self._data[at : at + n].toreadonly()
                self._view = (size, v)
                self.messages += 1
                self.nbytes += n
                return v
            out = self._get_message(deadline)  # a long message: reassembled, so a copy
            self._release()
            self.messages += 1
            self.nbytes += len(out)
            return memoryview(out)
        finally:
            self._leave()

    def release_view(self) -> None:
        if self._closed or self.producer:
            return
        if self._in_use:
            raise LocalProtocolError(
                f"release_view() on {self.name} while another thread receives",
                endpoint=self.name,
            )
        self._end_view()

    # -- both --------------------------------------------------------------------------------
    def arm(self, size: int | None = 0) -> bool:
        if self._closed:
            raise self._closed_error()
        if self.producer:
            need = self._need(max(size or 0, 0))
            self._publish()
            self._u64[L.PRODUCER_NEED] = need
            flag = L.PRODUCER_WAITING
        else:
            if self._view is None:
                self._release()
            need = 0
            flag = L.CONSUMER_WAITING
        self._u32[flag] = 1
        _fence()
        if self._ready(need):
            self._u32[flag] = 0
            return True
        return False

    def disarm(self) -> None:
        if not self._closed:
            self._u32[L.PRODUCER_WAITING if self.producer else L.CONSUMER_WAITING] = 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loan is not None:
            _release(self._loan[2])
            self._loan = None
        if self._view is not None:
            _release(self._view[1])
            self._view = None
        if self.producer and not self._in_use and not self._corrupt:
            self._publish()
        self._u32[L.PRODUCER_CLOSED if self.producer else L.CONSUMER_CLOSED] = 1
        _fence()
        self._w.signal()  # the peer, parked on either side
        self._w.signal_self()  # a thread of ours parked in this ring
        self._partial = None
        if not self._in_use:
            self._free()

    def _free(self) -> None:
        self._w.close()
        for mv in (self._u64, self._u32, self._data, self._mv):
            _release(mv)


def _release(mv: memoryview) -> None:
    try:
        mv.release()
    except BufferError:
        pass  # something derived from it (a numpy array) still holds it; it keeps the mapping
