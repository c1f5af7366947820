"""The pure-Python ring, part 1: layout access, errors, serialisation and waiting.

The fallback when the C extension is not built (``_pyring.PyRing`` is the class to use). The
waiting here is the spin and park logic on the ring's flags; the doorbells it parks on (the
sockets or eventfds, and the liveness socket) are ``_pywait._Wait``.

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

import functools
import math
import os
import platform
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, ParamSpec, TypeVar

from ipcwire._deadline import not_a_number
from ipcwire._poll import poll_ms
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
    MechanismUnavailable,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.shm import _layout as L
from ipcwire.shm._pywait import _dup, _Wait

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["TSO_MACHINES", "RingBase", "closed_wins", "init_ring", "release"]

P = ParamSpec("P")
R = TypeVar("R")
_REC: Final = struct.Struct("=IIQ")
_ALIVE_EVERY: Final = 0.005  # senders check the peer's liveness at most this often
# Spinning in Python holds the GIL, which starves the other threads of this process (the
# peer's thread among them, when both ends live in one process): CPython takes the GIL from a
# busy thread only after its switch interval (5 ms), so every hand-over cost up to 5 ms and
# the conformance suite timed out under load. So after a short look with the GIL held, a
# Python spinner gives the GIL and the CPU away between looks: os.sched_yield() (a quarter of
# a microsecond, which keeps a peer in another process answered at once; but this thread
# often takes the GIL straight back before a waiting thread wakes up), and after _YIELD_FOR
# seconds, when the process has other threads, a nap: time.sleep(_NAP), 60-100 us with the
# kernel's timer slack, during which a waiting thread surely takes the GIL.
_PRESPIN: Final = 32  # looks with the GIL held first (about 3 us, as the C ring's PRESPIN_NS)
_YIELD_FOR: Final = 50e-6
_NAP: Final = 10e-6
_LONGEST: Final = 1e9  # seconds: a longer timeout (inf too) is this one, as in the C ring
TSO_MACHINES: Final = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
_fence_lock = threading.Lock()
_monotonic = time.monotonic
_sleep = time.sleep
_sched_yield = os.sched_yield


def _fence() -> None:
    """A full memory barrier on x86: acquiring a lock runs a locked instruction."""
    _fence_lock.acquire()
    _fence_lock.release()


def _align(n: int) -> int:
    return (n + L.ALIGN - 1) & ~(L.ALIGN - 1)


def _check_machine() -> None:
    if platform.machine().lower() not in TSO_MACHINES:
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


class RingBase:
    """State, errors, serialisation and waiting of one ring end (see :class:`PyRing`)."""

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
        if policy != "spin" and wait_fd < 0:
            raise ValueError(
                "the 'park' and 'hybrid' policies need a wait_fd (a socket or an eventfd)"
            )
        if spin_ns < 0:
            raise ValueError("spin_ns must not be negative")
        self.name = name
        self.producer = role == "producer"
        self.max_message = max_message
        self.messages = 0
        self.nbytes = 0
        self._closed = False
        self._in_use = False
        self._lock = threading.Lock()  # serialises calls
        self._state = threading.Lock()  # close() against a call leaving (who frees the fds)
        self.max_send = 1 << 64
        self._corrupt: str | None = None
        self._send_broken = False
        self._timeout: float | None = None  # the running receive's timeout= (its Timeout)
        self._progress = 0  # bytes of the message being sent that are in the ring
        self._loan: tuple[int, int, memoryview] | None = None  # (offset, size, view)
        self._view: tuple[int, memoryview] | None = None  # (record size, view)
        self._partial: bytearray | None = None
        self._partial_total = 0
        self._discarding = False
        self._alive_at = 0.0
        # None, or called with the error of the peer's end (went away, closed its end); it
        # returns the error to raise (the C ring's on_end)
        self.on_end: Callable[[Exception], Exception] | None = None
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
        self.max_record = cap - L.RECORD_HEADER  # a loan may fill the ring
        self._fragment = cap // 4 - L.RECORD_HEADER
        self._pos: int = tail if self.producer else head
        self._pub: int = self._pos
        self._peer: int = head if self.producer else tail
        self._w = _Wait(_dup(wait_fd), _dup(wake_fd), _dup(alive_fd), policy, spin_ns)

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
        if self.producer:
            return self._pos - self._peer
        used: int = self._u64[L.TAIL] - self._pos  # read fresh; 0 if it is nonsense
        return used if 0 <= used <= self.capacity else 0

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

    def _gone_error(self) -> Exception:
        extra = "; a partly received message was discarded" if self._partial is not None else ""
        return self._told(
            ChannelBroken(
                f"the peer of {self.name} went away without closing the channel (its process "
                f"exited or was killed){extra}",
                endpoint=self.name,
            )
        )

    def _told(self, exc: Exception) -> Exception:
        """The error to raise for the peer's end ``exc``: what ``on_end`` makes of it."""
        hook = self.on_end
        if hook is None:
            return exc
        got = hook(exc)
        return got if isinstance(got, BaseException) else exc

    def _recv_timeout(self, timeout: float | None, no_turn: bool = False) -> Timeout:
        """A receive's Timeout says the timeout given, as every mechanism's does; ``no_turn``:
        the time went by while another thread received."""
        when = "yet" if timeout is None or timeout <= 0 else f"within {timeout} s"
        meanwhile = (
            ": another thread was receiving on this channel meanwhile (receives take turns)"
            if no_turn
            else ""
        )
        return Timeout(f"no message from {self.name} {when}{meanwhile}", endpoint=self.name)

    def _timeout_error(self, partial: bool = False) -> Timeout:
        if not self.producer:
            return self._recv_timeout(self._timeout)
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

    def _eof_error(self) -> Exception:
        if self.producer:
            exc: Exception = ChannelBroken(
                f"the peer closed {self.name}, so nothing more can be sent", endpoint=self.name
            )
        elif self._partial is not None or self._discarding:
            exc = ChannelBroken(
                f"{self.name} closed in the middle of a message; the partial message was discarded",
                endpoint=self.name,
            )
        else:
            exc = EndOfChannel(f"{self.name}: the peer closed its end", endpoint=self.name)
        return self._told(exc)

    def _too_large(self, size: int, limit: int, loan: bool | str = False) -> FrameTooLarge:
        if loan == "send":
            text = (
                f"{self.name}: a message of {size} bytes was not sent: over the peer's limit of "
                f"{limit} bytes (its max_frame); raise max_frame= on both sides, or split the "
                f"message"
            )
        elif loan:
            text = (
                f"{self.name}: a loan of {size} bytes is over the limit of {limit} (the ring's "
                f"capacity less 16); connect with a larger capacity=, or use send(), which "
                f"splits long messages"
            )
        else:
            text = (
                f"{self.name}: a message of {size} bytes arrived, over max_frame={limit}; it "
                f"was skipped. Raise max_frame= on this side"
            )
        return FrameTooLarge(text, size=size, limit=limit, endpoint=self.name)

    def _enter(
        self, producer: bool, deadline: float | None = None, timeout: float | None = None
    ) -> None:
        """Take this end for one call; a call already running in another thread is waited
        for (up to the deadline), so concurrent calls are serialised: threads receiving from
        one channel take turns, as on every blocking mechanism (the conformance suite's
        "threads receiving at once"). ``timeout``: the receive's, for its Timeout's words."""
        if self._closed:
            raise self._closed_error()
        if producer != self.producer:
            can = "send" if self.producer else "receive"
            raise LocalProtocolError(
                f"this end of the ring of {self.name} can only {can}", endpoint=self.name
            )
        if not self._lock.acquire(blocking=False):
            if deadline is None:
                got = self._lock.acquire()
            else:
                got = deadline != 0.0 and self._lock.acquire(
                    timeout=max(deadline - _monotonic(), 0.0)
                )
            if not got:
                if not producer:
                    raise self._recv_timeout(timeout, no_turn=True)
                raise Timeout(
                    f"send to {self.name} timed out: another thread's send on this channel did "
                    f"not finish in time (sends take turns); nothing was sent",
                    endpoint=self.name,
                )
        with self._state:
            if self._closed:
                self._lock.release()
                raise self._closed_error()
            self._in_use = True
        self._timeout = timeout  # (read by this call's Timeout only: the lock is held)

    def _leave(self) -> None:
        with self._state:
            self._in_use = False
            if self._closed:
                self._free()
        self._lock.release()

    def _free(self) -> None:
        self._w.close()
        for mv in (self._u64, self._u32, self._data, self._mv):
            release(mv)

    def _deadline(self, timeout: float | None) -> float | None:
        """None: forever; 0.0: do not wait; otherwise a time.monotonic() deadline.

        Raises:
            ConfigurationError: NaN (every mechanism's words, naming this endpoint).
        """
        if timeout is None:
            return None
        if math.isnan(timeout):
            raise not_a_number(self.name)
        return 0.0 if timeout <= 0 else _monotonic() + min(timeout, _LONGEST)

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
        if w.policy == "park" or not self._spin(need, deadline):
            self._park(need, deadline)

    def _spin(self, need: int, deadline: float | None) -> bool:
        """The spinning phase of the spin and hybrid policies (see _PRESPIN). True: ready;
        False: the hybrid policy's spin_ns passed, park now."""
        w = self._w
        start = _monotonic()
        spin_until = math.inf if w.policy == "spin" else start + w.spin_ns / 1e9
        for _ in range(_PRESPIN if spin_until > start else 0):
            if self._ready(need):
                return True
        nap_from = start + _YIELD_FOR if threading.active_count() > 1 else math.inf
        next_alive = start + 0.001
        while True:
            if self._ready(need):
                return True
            if self._closed:
                raise self._closed_error()
            now = _monotonic()
            if deadline is not None and now >= deadline:
                raise self._timeout_error()
            if now >= next_alive:
                next_alive = now + 0.001
                if not w.alive():
                    if self._ready(need):
                        return True
                    raise self._gone_error()
            if now >= spin_until:
                return False
            if now < nap_from:
                _sched_yield()  # the GIL and the CPU, for a moment
            else:
                _sleep(_NAP)  # long enough for another thread to take the GIL

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
                ms = poll_ms(left)  # (at most about 24 days, then again)
            try:
                if ms is None and w.wait_sock is not None:
                    gone = not w.sleep()  # one blocking recv: asleep until rung
                else:
                    events = w.poller.poll(ms)
                    gone = False
                    for fd, _ in events:
                        if fd == w.alive_fd or not w.drain():
                            gone = True
            finally:
                u32[flag] = 0
            if self._closed:
                raise self._closed_error()
            if gone:
                if self._ready(need):
                    return
                raise self._gone_error()


def closed_wins(method: Callable[P, R]) -> Callable[P, R]:
    """A public ring method whose failure, when this end was closed meanwhile (from another
    thread), is ``ChannelClosed`` (Closed wins over Broken and end of channel)."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except IpcwireError as exc:
            self = args[0]
            if isinstance(self, RingBase) and self._closed and not isinstance(exc, ChannelClosed):
                raise self._closed_error() from exc
            raise

    return call


def release(mv: memoryview) -> None:
    try:
        mv.release()
    except BufferError:
        pass  # something derived from it (a numpy array) still holds it; it keeps the mapping
