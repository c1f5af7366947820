"""``ipcwire bench`` contenders for shared memory: the raw-Python baseline and the loan rows.

* ``raw/shm``: a plain pure-Python ring in an ``mmap``, what someone writes by hand when they
  want shared memory without a library: one file in ``/dev/shm`` holding two single-producer
  single-consumer byte rings (one per direction), each a ``tail`` and a ``head`` counter on
  their own cache lines and a data area. ``send`` waits (busy-polls) for room, writes a 4-byte
  length and the payload with slice assignment and publishes the new ``tail``; ``recv``
  busy-polls ``tail``, copies the payload out as ``bytes`` and publishes ``head``. Each side
  keeps the other's counter as last seen and reads it again only when that says full (or
  empty), the usual SPSC habit. Records are 8-byte aligned and never wrap (a marker sends the
  reader back to the start). It shares no
  code with ``ipcwire.shm``, so it stays a baseline: ipcwire's shm rows (``baseline="raw/shm"``,
  from the mechanism registry) show their ratio to it. CPython has no atomics, so it relies on
  x86's memory ordering (stores are not reordered with stores, loads with loads); it is
  registered on x86 only.
* ``ipcwire/shm/blocking/spin/loan``: ipcwire's shm channel with the ``spin`` policy using the
  zero-copy API: ``loan(n)`` + one slice copy into the ring + ``send_loan()`` to send,
  ``recv_view()`` to receive (the receiver checks the message in place, no copy). The
  connecting side asks for a ring of at least 2 MiB and four messages (:func:`loan_capacity`),
  so a 1 MiB message travels as one record. Throughput only: its 1 MiB rate is the one the
  issue compares with the ``memcpy`` floor measured in the same run.

Imported by the bench (``CONTENDER_MODULES``), which measures and verifies both like every
other row.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import platform
import struct
import time
from typing import Any, Final

import ipcwire
from ipcwire.bench.builtin.mechanisms import bench_url
from ipcwire.bench.contender import Contender, Task, register_contender

__all__ = ["CONTENDERS", "RAW_SHM", "SHM_LOAN", "loan_capacity", "ring_capacity"]

# -- raw/shm: a hand-written pure-Python ring --------------------------------------------------

_X86: Final = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
_PAGE: Final = 4096
_MIN_RING: Final = 1 << 20  # data bytes per direction, as ipcwire's default
_LEN: Final = struct.Struct("<I")
_WRAP: Final = 0xFFFFFFFF  # length of a marker record: continue at offset 0
# control page, as u32: [0] B attached, [1] A closed, [2] B closed
_ATTACHED, _A_CLOSED, _B_CLOSED = 0, 1, 2
# a ring's header page, as u64: tail (producer) at byte 0, head (consumer) at byte 64
_TAIL, _HEAD = 0, 8


def ring_capacity(size: int) -> int:
    """Data bytes per direction for ``size``-byte messages: 1 MiB, or room for four."""
    cap = _MIN_RING
    while cap < 4 * (size + 8):
        cap *= 2
    return cap


class _Closed(EOFError):
    pass


class _RawEnd:
    """One end of the mapped segment: the ring it writes (``tx``) and the one it reads."""

    def __init__(self, mm: mmap.mmap, cap: int, *, is_a: bool) -> None:
        self._mm = mm
        self._cap = cap
        self._mask = cap - 1
        view = memoryview(mm)
        self._ctl = view[:_PAGE].cast("I")
        span = _PAGE + cap

        def ring(i: int) -> tuple[memoryview, memoryview]:
            base = _PAGE + i * span
            return view[base : base + _PAGE].cast("Q"), view[base + _PAGE : base + span]

        # ring 0 carries B -> A, ring 1 A -> B
        self._tx_idx, self._tx = ring(1 if is_a else 0)
        self._rx_idx, self._rx = ring(0 if is_a else 1)
        self._views = (view, self._ctl, self._tx_idx, self._tx, self._rx_idx, self._rx)
        self._mine = _A_CLOSED if is_a else _B_CLOSED
        self._peer = _B_CLOSED if is_a else _A_CLOSED
        self._tail = self._tx_idx[_TAIL]
        self._room = self._tx_idx[_HEAD] + cap  # tail may grow to this (head as last seen)
        self._head = self._rx_idx[_HEAD]
        self._seen = self._rx_idx[_TAIL]  # records up to this are there (tail as last seen)
        self.address = ""
        self._closed = False

    def send(self, message: bytes) -> None:
        n = len(message)
        rec = (n + 11) & ~7  # 4-byte length + payload, 8-byte aligned
        cap = self._cap
        if rec > cap // 2:
            raise ValueError(f"{n} bytes do not fit this ring ({cap} bytes)")
        data = self._tx
        tail = self._tail
        pos = tail & self._mask
        skip = cap - pos if pos + rec > cap else 0
        end = tail + skip + rec
        if end > self._room:  # the head last seen says full: look again, wait for room
            idx = self._tx_idx
            while end - idx[_HEAD] > cap:
                if self._ctl[self._peer]:
                    raise _Closed("the peer closed the ring")
            self._room = idx[_HEAD] + cap
        if skip:
            _LEN.pack_into(data, pos, _WRAP)
            pos = 0
        _LEN.pack_into(data, pos, n)
        data[pos + 4 : pos + 4 + n] = message
        self._tail = end
        self._tx_idx[_TAIL] = end  # publish (x86: after the data stores)

    def recv(self) -> bytes:
        head = self._head
        if head == self._seen:  # nothing left that we know of: look again, wait for a record
            idx = self._rx_idx
            while idx[_TAIL] == head:
                if self._ctl[self._peer] and idx[_TAIL] == head:
                    raise _Closed("the peer closed the ring")
            self._seen = idx[_TAIL]
        data = self._rx
        pos = head & self._mask
        (n,) = _LEN.unpack_from(data, pos)
        if n == _WRAP:
            head += self._cap - pos
            pos = 0
            (n,) = _LEN.unpack_from(data, 0)
        out = data[pos + 4 : pos + 4 + n].tobytes()
        self._head = head = head + ((n + 11) & ~7)
        self._rx_idx[_HEAD] = head  # hand the space back
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ctl[self._mine] = 1
        for v in reversed(self._views):
            v.release()
        with contextlib.suppress(BufferError):  # the other end, in this process, still maps it
            self._mm.close()


class _RawAcceptor:
    """Side A: creates the segment in /dev/shm; ``accept`` waits until B has mapped it, then
    unlinks it (nothing is left behind once both ends have it)."""

    def __init__(self, task: Task) -> None:
        self._cap = ring_capacity(task.size)
        self._path = f"/dev/shm/ipcwire-rawshm-{os.getpid()}-{task.serial}"  # noqa: S108
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, _PAGE + 2 * (_PAGE + self._cap))
            mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        self._end: _RawEnd | None = _RawEnd(mm, self._cap, is_a=True)
        self.address = f"{self._path} {self._cap}"

    def accept(self) -> _RawEnd:
        end = self._end
        assert end is not None
        deadline = time.monotonic() + 30.0
        while not end._ctl[_ATTACHED]:  # set-up, not measured
            if time.monotonic() > deadline:
                raise TimeoutError("side B did not map the ring within 30 s")
            time.sleep(0.0005)
        self._unlink()
        self._end = None
        return end

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)

    def close(self) -> None:
        self._unlink()
        if self._end is not None:
            self._end.close()


def raw_side_a(task: Task, shared: Any) -> _RawAcceptor:
    return _RawAcceptor(task)


def raw_side_b(task: Task, address: str, shared: Any) -> _RawEnd:
    path, cap = address.split()
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, 0)
    finally:
        os.close(fd)
    end = _RawEnd(mm, int(cap), is_a=False)
    end._ctl[_ATTACHED] = 1
    return end


RAW_SHM: Final = Contender(
    id="raw/shm",
    title="raw Python, mmap ring (spin)",
    group="baseline",
    mechanism="shm",
    api="blocking",
    side_a=raw_side_a,
    side_b=raw_side_b,
    wait="spin",
    framing="4-byte length, 8-byte aligned records",
    overhead=4,
    note="hand-written SPSC byte rings in one /dev/shm mmap, busy-polled both ways; slice "
    "assignment in, .tobytes() out; no ipcwire code",
)


# -- ipcwire/shm/blocking/spin/loan: the zero-copy API --------------------------------------------

_LOAN_MIN_RING: Final = 2 << 20


def loan_capacity(size: int) -> int:
    """Ring bytes for the loan row: at least 2 MiB, and room for four ``size``-byte records
    (16-byte record headers), so a 1 MiB message is one record and the sender runs ahead."""
    cap = _LOAN_MIN_RING
    while cap < 4 * (size + 16):
        cap *= 2
    return cap


class _LoanLink:
    """An ipcwire shm channel driven through ``loan``/``send_loan`` and ``recv_view``."""

    def __init__(self, ch: Any) -> None:
        self._ch = ch
        self._loan = ch.loan
        self._commit = ch.send_loan
        self.recv = ch.recv_view

    def send(self, message: bytes) -> None:
        n = len(message)
        self._loan(n)[:] = message
        self._commit()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ch.release_view()
        self._ch.close()


class _LoanAcceptor:
    def __init__(self, listener: Any) -> None:
        self._listener = listener
        self.address: str = listener.url

    def accept(self) -> _LoanLink:
        return _LoanLink(self._listener.accept(timeout=30.0))

    def close(self) -> None:
        self._listener.close()


def loan_side_a(task: Task, shared: Any) -> _LoanAcceptor:
    url = bench_url("shm", task.workdir, task.serial)
    return _LoanAcceptor(ipcwire.listen(url, policy="spin"))


def loan_side_b(task: Task, address: str, shared: Any) -> _LoanLink:
    ch = ipcwire.connect(address, timeout=10.0, policy="spin", capacity=loan_capacity(task.size))
    return _LoanLink(ch)


SHM_LOAN: Final = Contender(
    id="ipcwire/shm/blocking/spin/loan",
    title="ipcwire shm, spin, loan + recv_view",
    group="ipcwire",
    mechanism="shm",
    api="blocking",
    side_a=loan_side_a,
    side_b=loan_side_b,
    wait="spin",
    framing="16-byte record header",
    overhead=16,
    kinds=("throughput",),
    baseline="raw/shm",
    note="zero copy: loan(n), one copy into the ring, send_loan(); recv_view() read in "
    "place; ring of max(2 MiB, 4 messages)",
)

CONTENDERS: Final = (RAW_SHM, SHM_LOAN) if platform.machine().lower() in _X86 else (SHM_LOAN,)

for _c in CONTENDERS:
    register_contender(_c)
