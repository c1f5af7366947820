"""The messages every contender sends, and how the receiving side checks them.

Every message of a measurement has the same size. Its first 8 bytes are a header,
``u32 tag | u32 index`` (little-endian); the rest is pseudo-random bytes that differ from one
message to the next. Both processes build the same :class:`Pool` from the same seed, so the
receiver knows exactly what must arrive:

* every message: its size, and its header (the tag says data; the index says which message
  of the pool must come next, so one dropped, duplicated or reordered message is caught);
* one message in ``CRC_EVERY``: a CRC-32 of the whole message against the expected one
  (so truncation, corruption or a stale buffer is caught);
* at the end, the number of data messages received must equal the number sent.

Two marker messages of the same size frame the measured phase: ``WARM`` (warm-up is over,
start the clocks) and ``END`` (stop). A contender that drops, truncates or corrupts cannot
finish a measurement, so it cannot win one.
"""

from __future__ import annotations

import random
import struct
import zlib
from typing import Final

__all__ = [
    "CRC_EVERY",
    "END",
    "HEADER_SIZE",
    "MIN_SIZE",
    "TAG_DATA",
    "TAG_END",
    "TAG_WARM",
    "Pool",
    "VerificationError",
    "describe",
]

_HEADER: Final = struct.Struct("<II")
HEADER_SIZE: Final = _HEADER.size
MIN_SIZE: Final = 16
TAG_DATA: Final = 0x61746144  # b"Data"
TAG_WARM: Final = 0x6D726157  # b"Warm"
TAG_END: Final = 0x21646E45  # b"End!"
END: Final = TAG_END
CRC_EVERY: Final = 64  # a power of two
_POOL_BYTES: Final = 16 * 1024 * 1024  # memory for one pool, at most


class VerificationError(Exception):
    """What arrived is not what was sent: the contender dropped, truncated or corrupted."""


def describe(message: bytes | bytearray | memoryview, size: int) -> str:
    """A short description of an unexpected message, for the error report."""
    data = bytes(message[:HEADER_SIZE])
    n = len(message)
    if len(data) < HEADER_SIZE:
        return f"{n} bytes (expected {size}), too short for a header"
    tag, index = _HEADER.unpack(data)
    names = {TAG_DATA: "data", TAG_WARM: "warm", TAG_END: "end"}
    return f"{n} bytes (expected {size}), tag {names.get(tag, hex(tag))}, index {index}"


class Pool:
    """The distinct messages of one measurement, built identically in both processes.

    ``messages[i & mask]`` is the i-th data message; ``headers`` its expected first 8 bytes;
    ``crcs`` its CRC-32. ``warm`` and ``end`` are the markers.
    """

    __slots__ = ("crcs", "end", "headers", "mask", "messages", "size", "warm")

    def __init__(self, size: int, seed: int = 0x1BC, *, count: int | None = None) -> None:
        if size < MIN_SIZE:
            raise ValueError(f"messages must be at least {MIN_SIZE} bytes, not {size}")
        if count is None:
            count = self.slots_for(size)
        if count & (count - 1):
            raise ValueError("the pool size must be a power of two")
        rng = random.Random(seed * 1_000_003 + size)
        body = rng.randbytes(size + count)
        self.size = size
        self.mask = count - 1
        self.headers: list[bytes] = [_HEADER.pack(TAG_DATA, i) for i in range(count)]
        # Each message takes a different window of one random block: distinct bodies.
        self.messages: list[bytes] = [
            self.headers[i] + body[i : i + size - HEADER_SIZE] for i in range(count)
        ]
        self.crcs: list[int] = [zlib.crc32(m) for m in self.messages]
        self.warm = _HEADER.pack(TAG_WARM, 0) + body[count : count + size - HEADER_SIZE]
        self.end = _HEADER.pack(TAG_END, 0) + body[count : count + size - HEADER_SIZE]

    @staticmethod
    def slots_for(size: int) -> int:
        """How many distinct messages a pool of ``size``-byte messages holds: 64, fewer
        for large messages (16 MiB per pool at most), always a power of two."""
        count = 64
        while count > 2 and count * size > _POOL_BYTES:
            count //= 2
        return count

    def batches(self, batch: int) -> list[list[bytes]]:
        """The pool cut into lists of ``batch`` messages (``batch`` divides the pool size),
        for ``send_many``. Sent in order and repeated, they give the same sequence as sending
        the messages one by one."""
        n = self.mask + 1
        if batch <= 0 or n % batch:
            raise ValueError(f"batch {batch} must divide the pool size {n}")
        return [self.messages[i : i + batch] for i in range(0, n, batch)]

    def marker(self, message: bytes | bytearray | memoryview) -> int:
        """The tag of a message that is not the expected data message: ``TAG_WARM`` or
        ``TAG_END``.

        Raises:
            VerificationError: it is neither a marker of the right size nor what was expected.
        """
        if len(message) == self.size:
            head = bytes(message[:HEADER_SIZE])
            if head == self.warm[:HEADER_SIZE]:
                return TAG_WARM
            if head == self.end[:HEADER_SIZE]:
                return TAG_END
        raise VerificationError(f"unexpected message: {describe(message, self.size)}")

    def check_crc(self, message: bytes | bytearray | memoryview, index: int) -> None:
        """Compare the CRC-32 of ``message`` with that of data message ``index``.

        Raises:
            VerificationError: the bytes differ.
        """
        if zlib.crc32(message) != self.crcs[index & self.mask]:
            raise VerificationError(
                f"message {index} has the right size and header but different bytes "
                f"(CRC-32 mismatch): the contender corrupted or reused a buffer"
            )

    def mismatch(self, message: bytes | bytearray | memoryview, index: int) -> VerificationError:
        """The error for a data message that is not message ``index``."""
        return VerificationError(
            f"expected data message {index} (pool slot {index & self.mask}) of {self.size} "
            f"bytes, got {describe(message, self.size)}: a message was dropped, truncated, "
            f"duplicated or reordered"
        )
