"""The shared-memory ring's layout, as numbers (``src/ipcwire/_ext/ring.h`` draws it).

Shared by the pure-Python ring and the segment code; the C extension has the same values
(``ipcwire._ext._native.HEADER_SIZE``...), which a test compares.
"""

from __future__ import annotations

from typing import Final

MAGIC: Final = 0x474E495257435049  # b"IPCWRING" read as a little-endian u64
VERSION: Final = 1
HEADER_SIZE: Final = 512
RECORD_HEADER: Final = 16  # u32 len, u32 kind, u64 aux
ALIGN: Final = 16
MIN_CAPACITY: Final = 4096
MAX_CAPACITY: Final = 1 << 32  # record lengths are u32

# record kinds
PAD: Final = 0
MSG: Final = 1
FIRST: Final = 2  # aux = length of the whole message
MIDDLE: Final = 3
LAST: Final = 4

# header fields, as indices into the header cast to u64 ("Q") or u32 ("I")
TAIL: Final = 128 // 8
HEAD: Final = 256 // 8
PRODUCER_NEED: Final = 400 // 8
CONSUMER_WAITING: Final = 384 // 4
PRODUCER_WAITING: Final = 388 // 4
PRODUCER_CLOSED: Final = 392 // 4
CONSUMER_CLOSED: Final = 396 // 4

POLICIES: Final = ("spin", "park", "hybrid")


def header_problem(magic: int, version: int, header_size: int, capacity: int, avail: int) -> str:
    """What is wrong with a ring header ("" when nothing is); the same checks as ring.c."""
    if magic != MAGIC:
        return "bad magic: this memory does not hold an ipcwire ring"
    if version != VERSION:
        return "unsupported ring layout version (the peer runs another ipcwire)"
    if header_size != HEADER_SIZE:
        return "bad header size"
    if not MIN_CAPACITY <= capacity <= MAX_CAPACITY or capacity & (capacity - 1):
        return "bad capacity: not a power of two from 4 KiB to 4 GiB"
    if capacity > avail - HEADER_SIZE:
        return "the capacity in the header is larger than the shared region"
    return ""


def ring_span(capacity: int) -> int:
    """Bytes one ring occupies in a segment, rounded up to whole pages."""
    return (HEADER_SIZE + capacity + 4095) & ~4095
