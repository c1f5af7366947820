"""Stream framing, without I/O: turn a byte stream into whole messages and back.

Two framings (docs/protocol.md):

* ``length``: each message is a 4-byte unsigned big-endian length, then that many bytes.
  The length ``0xFFFFFFFF`` is no message: on a channel whose handshake agreed on it, it
  starts the goodbye frame that ends the channel (``GOODBYE_MARK``, docs/protocol.md
  section 5); the decoder records it in ``ended`` and ignores whatever follows.
* ``ndjson``: each message is one line terminated by ``\\n`` (an optional ``\\r`` before it is
  dropped; empty lines are skipped, as the NDJSON spec allows).

Decoders own one reusable buffer. Drivers either copy bytes in with :meth:`feed`, or read
straight into it: ``view = dec.get_buffer()``, ``n = sock.recv_into(view)``,
``dec.buffer_updated(n)`` (the same shape as :class:`asyncio.BufferedProtocol`). Then
:meth:`next_frame` returns each complete frame as a memoryview that stays valid until the next
``get_buffer``/``feed`` call. A partial frame is never returned, and a frame over the limit
raises :class:`~ipcwire.errors.FrameTooLarge` as soon as its size is known (for NDJSON, as soon
as the line is longer than the limit) instead of buffering it. The decoder then discards that
frame's bytes as they arrive, so the stream stays in step: the oversized message is never
delivered (not even in part) and the next call returns the message after it.
"""

from __future__ import annotations

import struct
from typing import Final

from ipcwire.errors import FrameTooLarge

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FRAMINGS",
    "GOODBYE_MARK",
    "HEADER",
    "MAX_REASON",
    "FrameDecoder",
    "LengthPrefixDecoder",
    "NdjsonDecoder",
    "goodbye_frame",
    "make_decoder",
    "readable_reason",
]

HEADER: Final = struct.Struct(">I")
DEFAULT_MAX_FRAME: Final = 64 * 1024 * 1024
MAX_LENGTH_PREFIX: Final = 0xFFFFFFFE  # the largest message; the next length is the mark
GOODBYE_MARK: Final = 0xFFFFFFFF
MAX_REASON: Final = 1024  # bytes of a peer's reason for ending (every mechanism's)
_SKIP_ALL: Final = 1 << 62  # after a goodbye: discard everything
FRAMINGS: Final = ("length", "ndjson")

_INITIAL: Final = 256 * 1024  # initial buffer; also the size of one ordinary read
_MIN_READ: Final = 64 * 1024  # never offer a reader less room than this
HANDSHAKE_BUFFER: Final = 4096  # a listener's buffer for a client not yet past its handshake


def _too_large(
    size: int,
    limit: int,
    endpoint: str | None,
    what: str,
    *,
    at_least: bool = False,
    header: bytes = b"",
) -> FrameTooLarge:
    """``at_least``: ``size`` is what has arrived of it so far (a line with no end yet).
    ``header``: a length prefix's 4 bytes; when they are printable text, the peer most likely
    writes lines (``echo``, a client in another language), and the message says so."""
    where = f" from {endpoint}" if endpoint else ""
    text = ""
    if header and all(32 <= b < 127 for b in header):
        text = (
            f"; its length prefix {header!r} looks like text: if the peer writes lines of "
            f"JSON (a shell's echo, a client in another language), use framing='ndjson'"
        )
    exc = FrameTooLarge(
        f"{what}{where} is {'at least ' if at_least else ''}{size} bytes, over the limit of "
        f"{limit} bytes{text}; "
        f"raise max_frame= on both sides if such messages are expected",
        size=size,
        limit=limit,
        endpoint=endpoint,
    )
    exc.header = header
    return exc


class FrameDecoder:
    """Shared buffer handling for the decoders; subclasses find the frame boundaries."""

    __slots__ = (
        "_buf",
        "_end",
        "_skip",
        "_small",
        "_start",
        "_view",
        "ended",
        "endpoint",
        "goodbye",
        "max_frame",
    )

    def __init__(
        self,
        max_frame: int = DEFAULT_MAX_FRAME,
        *,
        endpoint: str | None = None,
        small: bool = False,
    ):
        """``small``: start with a few KiB and grow only as bytes arrive (a listener's
        decoder for a client that has not finished its handshake, so that unauthenticated
        connections cost the server what they send, not a full buffer each); :meth:`grow`
        gives it the ordinary size once the client is in."""
        if not 0 <= max_frame <= MAX_LENGTH_PREFIX:
            raise ValueError(f"max_frame must be between 0 and {MAX_LENGTH_PREFIX}")
        self.max_frame = max_frame
        self.endpoint = endpoint
        self._small = small
        self._buf = bytearray(HANDSHAKE_BUFFER if small else _INITIAL)
        self._view = memoryview(self._buf)
        self._start = 0  # first unconsumed byte
        self._end = 0  # one past the last byte received
        self._skip = 0  # bytes of an oversized frame still to discard (-1: up to a newline)
        self.goodbye = False  # the peer ends with a goodbye frame (agreed in the handshake)
        self.ended: str | None = None  # its reason once it came ("": a clean close)

    # -- receiving bytes ------------------------------------------------------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Writable room at the end of the buffer for the next read (at least 64 KiB; a
        ``small`` decoder offers what it has free, and doubles when it is full)."""
        if self._end == 0 and sizehint <= len(self._buf) and not self._skip:
            return self._view  # empty: the whole buffer (the common case, no slicing)
        if self._small:  # room for at most as much again as has arrived (it doubles)
            if self._end == 0 and not self._skip:
                return self._view
            need = max(min(self._needed(), self._end - self._start), 1)
        else:
            need = self._needed()
            if need > _MIN_READ:
                # A large frame: room for the rest of it only as its bytes arrive (the
                # buffer's size in all, doubling when it is full), never at once for what
                # its header announces: 4 bytes must not cost the receiver max_frame.
                need = min(need, max(len(self._buf) - (self._end - self._start), _MIN_READ))
            need = max(need, sizehint, _MIN_READ)
        if len(self._buf) - self._end < need:
            self._make_room(need)
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """Record that ``nbytes`` were written into the view from :meth:`get_buffer`."""
        self._end += nbytes

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in (for drivers that receive bytes objects)."""
        n = len(data)
        if n:
            view = self.get_buffer(n)
            if len(view) < n:  # (small: it offers less than the hint)
                self._make_room(n)
                view = self._view[self._end :]
            view[:n] = data
            self._end += n

    def _make_room(self, need: int) -> None:
        pending = self._end - self._start
        if pending + need <= len(self._buf) and self._start > 0:
            # Compact: move the partial frame to the front of the same buffer.
            self._view[:pending] = bytes(self._view[self._start : self._end])
        else:
            size = len(self._buf) if self._small else max(len(self._buf), _INITIAL)
            while size < pending + need:
                size *= 2
            whole = pending + self._needed()  # the current frame, all of it (length framing)
            if not self._small and size < whole <= size + _MIN_READ:
                size = whole  # its last bytes: room for exactly them, not double again
            fresh = bytearray(size)
            fresh[:pending] = self._view[self._start : self._end]
            self._buf = fresh
            self._view = memoryview(fresh)
        self._start = 0
        self._end = pending

    def grow(self) -> None:
        """Leave ``small`` mode: the ordinary buffer size from now on (what has arrived and
        not been taken yet is kept)."""
        if self._small:
            self._small = False
            if len(self._buf) < _INITIAL:
                pending = self._end - self._start
                fresh = bytearray(_INITIAL)
                fresh[:pending] = self._view[self._start : self._end]
                self._buf = fresh
                self._view = memoryview(fresh)
                self._start = 0
                self._end = pending

    def shrink(self) -> None:
        """Give back memory after a large message, when nothing is buffered."""
        if self._start == self._end and len(self._buf) > 4 * _INITIAL:
            self._buf = bytearray(_INITIAL)
            self._view = memoryview(self._buf)
            self._start = self._end = 0

    def release(self) -> None:
        """The stream has ended: give back the buffer, when nothing is buffered (a partial
        frame stays, for error messages). Bytes fed after this start a small buffer again."""
        if self._start == self._end and len(self._buf) > HANDSHAKE_BUFFER:
            self._small = True
            self._buf = bytearray(HANDSHAKE_BUFFER)
            self._view = memoryview(self._buf)
            self._start = self._end = 0

    # -- state ----------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames (a partial frame, or whole ones)."""
        return self._end - self._start

    def _needed(self) -> int:  # pragma: no cover - overridden
        return 0

    def next_frame(self) -> memoryview | None:  # pragma: no cover - overridden
        raise NotImplementedError


class LengthPrefixDecoder(FrameDecoder):
    """Frames of ``u32be length | payload``.

    With ``goodbye`` set (the handshake agreed on it), a ``GOODBYE_MARK`` header starts the
    peer's goodbye: ``u32be reason length | reason``. It is not returned as a frame: the
    reason (``""`` for a clean close) goes to ``ended`` and the rest of the stream is
    discarded, so ``next_frame`` returns None from then on.
    """

    __slots__ = ()

    def _needed(self) -> int:
        pending = self._end - self._start
        if pending >= 4:
            n: int = HEADER.unpack_from(self._buf, self._start)[0]
            if n <= self.max_frame:
                return 4 + n - pending
        return 4

    def next_frame(self) -> memoryview | None:
        """The next complete payload, or None when more bytes are needed.

        Raises:
            FrameTooLarge: the announced length is over ``max_frame``.
        """
        if self._skip:
            self._discard()
        start = self._start
        avail = self._end - start
        if avail < 4:
            return None
        (n,) = HEADER.unpack_from(self._buf, start)
        if n > self.max_frame:
            if n == GOODBYE_MARK and self.goodbye:
                self._goodbye(start, avail)
                return None
            header = bytes(self._buf[start : start + 4])
            self._skip = 4 + n
            self._discard()
            raise _too_large(n, self.max_frame, self.endpoint, "a message", header=header)
        if avail < 4 + n:
            return None
        begin = start + 4
        stop = begin + n
        if stop == self._end:
            self._start = self._end = 0
        else:
            self._start = stop
        return self._view[begin:stop]

    def clean_goodbye_next(self) -> bool:
        """Whether the peer closed cleanly with nothing unreceived before it: its goodbye,
        without a reason, is the next thing buffered (or was taken, cleanly, with nothing
        after). Consumes nothing."""
        if self.ended is not None:
            return self.ended == "" and not self.buffered
        if not self.goodbye or self._skip:
            return False
        start = self._start
        if self._end - start < 8:
            return False
        mark: int = HEADER.unpack_from(self._buf, start)[0]
        size: int = HEADER.unpack_from(self._buf, start + 4)[0]
        return mark == GOODBYE_MARK and size == 0

    def _goodbye(self, start: int, avail: int) -> None:
        """Take the goodbye frame at ``start`` once it is whole (then ``ended`` is set)."""
        if avail < 8:
            return
        (size,) = HEADER.unpack_from(self._buf, start + 4)
        if size > MAX_REASON:
            self.ended = f"a goodbye with a {size}-byte reason, over {MAX_REASON}"
        elif avail < 8 + size:
            return
        else:
            self.ended = readable_reason(bytes(self._view[start + 8 : start + 8 + size]))
        self._skip = _SKIP_ALL
        self._discard()

    def _discard(self) -> None:
        avail = self._end - self._start
        if avail <= self._skip:
            self._skip -= avail
            self._start = self._end = 0
        else:
            self._start += self._skip
            self._skip = 0

    def partial_description(self) -> str:
        """How much of the current frame has arrived, for error messages."""
        pending = self._end - self._start
        if pending < 4:
            return f"{pending} of 4 header bytes"
        (n,) = HEADER.unpack_from(self._buf, self._start)
        return f"{pending - 4} of {n} payload bytes"


class NdjsonDecoder(FrameDecoder):
    """Frames terminated by ``\\n``; ``\\r\\n`` accepted; empty lines skipped."""

    __slots__ = ("_scan",)

    def __init__(
        self,
        max_frame: int = DEFAULT_MAX_FRAME,
        *,
        endpoint: str | None = None,
        small: bool = False,
    ):
        super().__init__(max_frame, endpoint=endpoint, small=small)
        self._scan = 0  # bytes after _start already known to hold no newline

    def next_frame(self) -> memoryview | None:
        """The next complete line without its terminator, or None when more is needed.

        Raises:
            FrameTooLarge: the line is longer than ``max_frame``.
        """
        buf = self._buf
        while True:
            start = self._start
            nl = buf.find(b"\n", start + self._scan, self._end)
            if self._skip:
                # The rest of an oversized line: drop it up to and including its newline.
                if nl < 0:
                    self._start = self._end = self._scan = 0
                    return None
                self._skip = 0
                self._start = nl + 1
                continue
            if nl < 0:
                pending = self._end - start
                self._scan = pending
                if pending > self.max_frame:
                    self._skip = -1
                    self._start = self._end = self._scan = 0
                    raise _too_large(
                        pending, self.max_frame, self.endpoint, "a line", at_least=True
                    )
                return None
            self._scan = 0
            stop = nl - 1 if nl > start and buf[nl - 1] == 13 else nl
            if nl + 1 == self._end:
                self._start = self._end = 0
            else:
                self._start = nl + 1
            if stop - start > self.max_frame:
                raise _too_large(stop - start, self.max_frame, self.endpoint, "a line")
            if stop > start:
                return self._view[start:stop]

    def partial_description(self) -> str:
        return f"{self._end - self._start} bytes of an unterminated line"


def readable_reason(raw: bytes) -> str:
    """A goodbye's reason as text fit for an error message: what a peer sent, so invalid
    UTF-8 becomes U+FFFD and control characters ``?``."""
    text = raw.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


def goodbye_frame(reason: str = "") -> bytes:
    """The goodbye frame that ends a channel: clean (no reason) or after an error."""
    data = reason.encode("utf-8", "replace")[:MAX_REASON]
    return HEADER.pack(GOODBYE_MARK) + HEADER.pack(len(data)) + data


def make_decoder(
    framing: str,
    max_frame: int = DEFAULT_MAX_FRAME,
    *,
    endpoint: str | None = None,
    small: bool = False,
) -> LengthPrefixDecoder | NdjsonDecoder:
    """A fresh decoder for ``framing`` ("length" or "ndjson"); ``small``: see FrameDecoder."""
    if framing == "length":
        return LengthPrefixDecoder(max_frame, endpoint=endpoint, small=small)
    if framing == "ndjson":
        return NdjsonDecoder(max_frame, endpoint=endpoint, small=small)
    raise ValueError(f"unknown framing {framing!r}; use one of {', '.join(FRAMINGS)}")
