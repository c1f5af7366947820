"""The bodies of ``application/x-ipcwire-frames``, without I/O: packed and split here.

A *batch* (a POST of several messages, a long poll's answer) is each message as a 4-byte
big-endian length, then its bytes. A *message stream* (``GET {prefix}/channels/{id}/stream``)
is the same frames on one long response, with two lengths no message has: a heartbeat
(``HEARTBEAT_FRAME``) and the failure mark (``FAILED_MARK``, then a reason) that ends it.
This is the byte-level work on every message, apart from the rest of the protocol (paths,
headers, media types, problem documents and the errors they map to) in ``_protocol.py``;
the server and both clients use it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from ipcwire._core.framing import MAX_REASON
from ipcwire.errors import FrameTooLarge, RemoteProtocolError

__all__ = [
    "BIG_PART",
    "FAILED_MARK",
    "HEARTBEAT_FRAME",
    "FrameSplitter",
    "StreamReader",
    "batch_chunks",
    "failure_frame",
    "pack_batch",
    "unpack_batch",
]

# In a message stream, a length no message has: the server's channel ended after an error on
# its side. A 4-byte length and that many bytes of reason follow; then the response ends.
# Sent only to a client whose open request said "tells_failure": true.
FAILED_MARK: Final = 0xFFFFFFFE
HEARTBEAT_FRAME: Final = b"\xff\xff\xff\xff"  # a length no message has: "still here"
_HEADER: Final = struct.Struct(">I")


def pack_batch(payloads: Iterable[bytes | bytearray | memoryview]) -> bytes:
    """Messages as one ``application/x-ipcwire-frames`` body."""
    out = bytearray()
    for p in payloads:
        out += _HEADER.pack(len(p))
        out += p
    return bytes(out)


BIG_PART: Final = 64 * 1024  # a message this large goes out as its own chunk, not copied


def batch_chunks(payloads: Iterable[bytes]) -> tuple[list[bytes], int]:
    """Messages as the chunks of one ``application/x-ipcwire-frames`` body, and its length:
    small messages are joined with their headers; a large one is its own chunk, so its bytes
    are written as they are, not copied into the body."""
    chunks: list[bytes] = []
    small = bytearray()
    total = 0
    for p in payloads:
        n = len(p)
        small += _HEADER.pack(n)
        if n >= BIG_PART:
            chunks.append(bytes(small))
            chunks.append(p)
            small.clear()
        else:
            small += p
        total += 4 + n
    if small:
        chunks.append(bytes(small))
    return chunks, total


def unpack_batch(body: bytes | memoryview, max_frame: int, endpoint: str) -> list[memoryview]:
    """Split a batch body into message payloads (views into ``body``).

    Raises:
        RemoteProtocolError: a truncated frame.
        FrameTooLarge: a frame over ``max_frame``.
    """
    view = memoryview(body)
    out: list[memoryview] = []
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < 4:
            raise RemoteProtocolError(
                f"a batch from {endpoint} ends inside a frame header", endpoint=endpoint
            )
        (size,) = _HEADER.unpack_from(view, pos)
        pos += 4
        if size > max_frame:
            raise FrameTooLarge(
                f"a message in a batch from {endpoint} is {size} bytes, over the limit of "
                f"{max_frame}",
                size=size,
                limit=max_frame,
                endpoint=endpoint,
            )
        if end - pos < size:
            raise RemoteProtocolError(
                f"a batch from {endpoint} ends inside a message ({end - pos} of {size} bytes)",
                endpoint=endpoint,
            )
        out.append(view[pos : pos + size])
        pos += size
    return out


class FrameSplitter:
    """Splits an ``application/x-ipcwire-frames`` body into messages as its chunks arrive,
    each message's bytes copied once (a message that is a whole chunk not at all).

    Raises (from :meth:`feed`):
        FrameTooLarge: a frame over ``max_frame``.
    """

    __slots__ = ("_head", "_need", "_parts", "endpoint", "max_frame", "out")

    def __init__(self, max_frame: int, endpoint: str) -> None:
        self.max_frame = max_frame
        self.endpoint = endpoint
        self.out: list[bytes] = []
        self._head = b""  # a frame header split between chunks
        self._need = -1  # bytes still missing from the current message (-1: in a header)
        self._parts: list[memoryview] = []  # the current message's pieces so far

    def feed(self, chunk: bytes) -> None:
        out = self.out
        pos, end = 0, len(chunk)
        unpack = _HEADER.unpack_from
        while pos < end:
            need = self._need
            if need > 0:  # the rest of a message begun in an earlier chunk
                take = min(need, end - pos)
                self._parts.append(memoryview(chunk)[pos : pos + take])
                pos += take
                self._need = need - take
                if not self._need:
                    out.append(b"".join(self._parts))
                    self._parts = []
                    self._need = -1
                continue
            if self._head or end - pos < 4:
                take = min(4 - len(self._head), end - pos)
                self._head += chunk[pos : pos + take]
                pos += take
                if len(self._head) < 4:
                    return
                (size,) = unpack(self._head)
                self._head = b""
            else:
                (size,) = unpack(chunk, pos)
                pos += 4
            if size > self.max_frame:
                raise FrameTooLarge(
                    f"a message in a batch from {self.endpoint} is {size} bytes, over the "
                    f"limit of {self.max_frame}",
                    size=size,
                    limit=self.max_frame,
                    endpoint=self.endpoint,
                )
            if end - pos >= size:  # all of it is here
                out.append(chunk if size == end and not pos else chunk[pos : pos + size])
                pos += size
            else:
                self._parts.append(memoryview(chunk)[pos:end])
                self._need = size - (end - pos)
                pos = end

    @property
    def partial(self) -> bool:
        """Whether the body so far ends inside a frame."""
        return bool(self._head) or self._need > 0


class StreamReader:
    """Splits the body of a message stream (``GET {prefix}/channels/{id}/stream``) into
    message payloads as its chunks arrive; heartbeat frames are dropped."""

    __slots__ = ("_buf", "endpoint", "failed", "max_frame")

    def __init__(self, max_frame: int, endpoint: str) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame
        self.endpoint = endpoint
        self.failed: bytes | None = None  # the reason of a failure mark (the stream's end)

    def feed(self, chunk: bytes) -> list[bytes]:
        """The messages completed by ``chunk`` (none once a failure mark was read:
        :attr:`failed` then holds its reason).

        Raises:
            FrameTooLarge: a message over ``max_frame`` (the stream is then out of step).
            RemoteProtocolError: a failure mark with a reason over ``MAX_REASON`` bytes.
        """
        if self.failed is not None:
            return []
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size >= 0xFFFFFFFE:  # (a literal: this runs for every frame)
                if size == FAILED_MARK:  # the end, after an error on the server's side
                    if not self._failure_at(pos):
                        break
                    del buf[:]
                    return out
                pos += 4  # a heartbeat
                continue
            if size > self.max_frame:
                raise FrameTooLarge(
                    f"{self.endpoint} sent a {size}-byte message, over max_frame={self.max_frame}",
                    size=size,
                    limit=self.max_frame,
                    endpoint=self.endpoint,
                )
            if end - pos - 4 < size:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        del buf[:pos]
        return out

    def _failure_at(self, pos: int) -> bool:
        """Read the failure mark at ``pos`` into :attr:`failed`; False if it is not all here."""
        buf = self._buf
        if len(buf) - pos < 8:
            return False
        (n,) = _HEADER.unpack_from(buf, pos + 4)
        if n > MAX_REASON:
            raise RemoteProtocolError(
                f"{self.endpoint} ended its stream with a failure reason of {n} bytes, over "
                f"{MAX_REASON}",
                endpoint=self.endpoint,
            )
        if len(buf) - pos - 8 < n:
            return False
        self.failed = bytes(buf[pos + 8 : pos + 8 + n])
        return True

    @property
    def partial(self) -> int:
        """Bytes of an unfinished frame."""
        return len(self._buf)


def failure_frame(reason: str) -> bytes:
    """The failure mark that ends a message stream, with ``reason``."""
    data = reason.encode("utf-8", "replace")[:MAX_REASON]
    return _HEADER.pack(FAILED_MARK) + _HEADER.pack(len(data)) + data
