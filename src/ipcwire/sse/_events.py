"""The ``text/event-stream`` format, without I/O: writing events and parsing them back.

Parsing follows the WHATWG HTML standard, section 9.2.6 "Interpreting an event stream":
lines end in CRLF, LF or CR; a leading BOM is dropped; ``:`` starts a comment; ``data``
lines join with LF; ``id`` sets the last-event-ID buffer (ignored if it holds NUL); ``retry``
takes ASCII digits only; an empty line dispatches, with the last event ID updated even when
there is no data (so ``id: x`` then an empty line moves the resume point without an event).

ipcwire's conventions on top (the docs page shows them to browser code):

* event ids are ``<stream>-<seq>``: the stream's random id and a counter from 1, so a
  reconnecting client's ``Last-Event-ID`` names both the stream and the position;
* JSON payloads are the event's data as is; every other codec's payload is base64;
* ``event: ipcwire-gap`` (JSON data ``{"lost": n, "first": a, "last": b}``) says events
  were lost and how many; ``event: ipcwire-end`` says the server closed the stream;
* ``event: ipcwire-taken`` says another connection resumed the stream and took it over. Its
  id is the connection's last id marked ``~taken`` (:func:`taken_id`), so a client that
  reconnects anyway (EventSource does) sends that mark back and is refused with a status
  that stops EventSource, instead of taking the stream back.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from types import ModuleType
from typing import Final

import msgspec

from ipcwire.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "END_EVENT",
    "GAP_EVENT",
    "TAKEN_EVENT",
    "Event",
    "EventParser",
    "RunShape",
    "b64decode",
    "b64encode",
    "decode_data",
    "encode_data",
    "event_bytes",
    "format_id",
    "parse_id",
    "taken_from",
    "taken_id",
]


def _load_simd() -> ModuleType | None:
    """pybase64 (SIMD base64, a well-kept C library: 64 KiB decode ~40x faster than
    binascii here), if installed (``ipcwire[web]`` has it)."""
    try:
        import pybase64
    except ImportError:  # pragma: no cover - an optional dependency
        return None
    return pybase64


_simd = _load_simd()

GAP_EVENT: Final = "ipcwire-gap"
END_EVENT: Final = "ipcwire-end"
TAKEN_EVENT: Final = "ipcwire-taken"
_TAKEN: Final = "~taken"  # the mark on the id of a taken event (not a digit: not a position)
KEEPALIVE: Final = b": keepalive\n\n"
_BOM: Final = b"\xef\xbb\xbf"
_BIG_EVENT: Final = 65536  # bytes: events this big are matched one at a time, not split
_LINE_BY_LINE: Final = 1024  # bytes per event from which the data lines are checked one by one


_SIMD_FROM: Final = 1024  # bytes: from this size on pybase64 is faster than binascii


def b64encode(payload: bytes | bytearray | memoryview) -> bytes:
    """Base64 without a newline: pybase64 (SIMD) for payloads of 1 KiB and more when it is
    installed, else the standard library's binascii (the same bytes either way)."""
    if _simd is not None and len(payload) >= _SIMD_FROM:
        return bytes(_simd.b64encode(payload))
    return binascii.b2a_base64(payload, newline=False)


def b64decode(data: bytes | bytearray | memoryview) -> bytes:
    """Strict base64 decoding: what ``binascii.a2b_base64(data, strict_mode=True)`` returns
    or raises. pybase64 decodes data of 1 KiB and more when it is installed; whatever it
    refuses (it is the stricter of the two) goes to binascii, which decides, so the same
    input is accepted or refused the same way with or without it.

    Raises:
        binascii.Error: not base64.
    """
    if _simd is not None and len(data) >= _SIMD_FROM:
        try:
            return bytes(_simd.b64decode(data, validate=True))
        except (binascii.Error, ValueError):
            pass  # binascii decides, with its own message
    return binascii.a2b_base64(data, strict_mode=True)


def _line_end(buf: bytearray, start: int, end: int) -> int:
    """Index of the first CR or LF in ``buf[start:end]``, or -1 (memchr, not a regex)."""
    lf = buf.find(b"\n", start, end)
    cr = buf.find(b"\r", start, end if lf < 0 else lf)
    return cr if cr >= 0 else lf


def _find_blank(buf: bytearray, start: int) -> int:
    """``buf.find(b"\n\n", start)``, by memchr from one LF to the next: a two-byte search
    steps a few bytes at a time through a long base64 line, this jumps over it (a 64 KiB
    event: ~100x faster)."""
    i = buf.find(b"\n", start)
    while i >= 0:
        if buf[i + 1 : i + 2] == b"\n":
            return i
        i = buf.find(b"\n", i + 2)  # buf[i + 1] is not an LF
    return -1


def _rfind_blank(buf: bytearray, start: int) -> int:
    """``buf.rfind(b"\n\n", start)``, by memchr from one LF back to the previous one."""
    i = buf.rfind(b"\n", start)
    while i > start:
        if buf[i - 1] == 10:
            return i - 1
        i = buf.rfind(b"\n", start, i - 1)  # buf[i - 1] is not an LF
    return -1


def format_id(stream: str, seq: int) -> str:
    """The event id of event ``seq`` of ``stream``."""
    return f"{stream}-{seq}"


def parse_id(event_id: str) -> tuple[str, int] | None:
    """``(stream, seq)`` from an ipcwire event id, or None if it is not one."""
    stream, sep, seq = event_id.strip().rpartition("-")
    if not sep or not stream or not (seq.isascii() and seq.isdigit()) or len(seq) > 18:
        return None
    return stream, int(seq)


def taken_id(stream: str, seq: int) -> str:
    """The id of the ``ipcwire-taken`` event ending a connection whose last event was
    ``seq``: that event id, marked."""
    return format_id(stream, seq) + _TAKEN


def taken_from(event_id: str) -> str | None:
    """The event id a :func:`taken_id` was made from (None: not a taken id)."""
    event_id = event_id.strip()
    return event_id[: -len(_TAKEN)] if event_id.endswith(_TAKEN) else None


def encode_data(payload: bytes | bytearray | memoryview, text: bool) -> bytes:
    """A payload as event data: JSON as is (one line), anything else as base64.

    Raises:
        LocalProtocolError: a text payload holding a carriage return (it cannot survive).
    """
    if not text:
        return b64encode(payload)
    data = bytes(payload)
    if b"\r" in data:
        raise LocalProtocolError("an SSE text payload cannot hold a carriage return")
    return data


def decode_data(data: bytes, text: bool) -> bytes:
    """Event data back to the payload.

    Raises:
        RemoteProtocolError: base64 that does not decode.
    """
    if text:
        return data
    try:
        return b64decode(data)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError(
            f"an event's data is not base64 ({exc}); does the server use the same codec?"
        ) from None


def event_bytes(event_id: str | None, data: bytes, event: str | None = None) -> bytes:
    """One event on the wire (data may hold LFs: each line becomes a ``data:`` field)."""
    parts = []
    if event is not None:
        parts.append(b"event: " + event.encode() + b"\n")
    if event_id is not None:
        parts.append(b"id: " + event_id.encode() + b"\n")
    if b"\n" in data:
        parts.extend(b"data: " + line + b"\n" for line in data.split(b"\n"))
    else:
        parts.append(b"data: " + data + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def gap_event(event_id: str | None, lost: int, first: int, last: int, reason: str) -> bytes:
    """The explicit signal that ``lost`` events (``first``..``last``) cannot be replayed."""
    body = msgspec.json.encode({"lost": lost, "first": first, "last": last, "reason": reason})
    return event_bytes(event_id, body, GAP_EVENT)


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event. ``oversize`` > 0: its data was over the limit and dropped.
    ``has_id``: it had an ``id:`` field of its own (else ``id`` is the last event's)."""

    type: str
    data: bytes
    id: str
    oversize: int = 0
    has_id: bool = field(default=True, compare=False)


class RunShape:
    """The usual shape of one stream's events, which :meth:`EventParser.match_run` parses a
    whole read at a time: ``id: <stream>-<seq>``, one ``data: `` line, a blank line; LF only.
    ``binary``: the data is base64 (decoded and checked strictly, as :func:`decode_data`)."""

    __slots__ = ("binary", "id_line", "id_sep", "stream")

    def __init__(self, stream: str, binary: bool) -> None:
        self.stream = stream
        self.binary = binary
        self.id_line = "id: " + stream + "-"
        self.id_sep = "\n" + self.id_line

    def expected_ids(self, first: int, count: int) -> bytes:
        """The id lines of events ``first`` .. ``first + count - 1``, joined with LF."""
        return (self.id_line + self.id_sep.join(map(str, range(first, first + count)))).encode()


class EventParser:
    """Incremental ``text/event-stream`` parser.

    ``max_data`` bounds one event's data (bytes on the wire); a longer event is dispatched
    with empty data and ``oversize`` set, never buffered whole. ``retry`` holds the last
    reconnection time the server sent (milliseconds), ``last_id`` the last event ID.
    """

    def __init__(self, max_data: int, *, last_id: str = "") -> None:
        self.max_data = max_data
        self.last_id = last_id
        self.retry: int | None = None
        self.comments = 0
        self._buf = bytearray()
        self._scanned = 0  # bytes at the start of _buf known to hold no line end
        self._skip_lf = False  # the previous line ended with CR: a following LF belongs to it
        self._bom = True  # still to check for a BOM
        self._discard: bytes | None = None  # field of an overlong line being discarded
        self._id_buffer = last_id
        self._run_end = 0  # bytes of _buf that match_run matched, until commit_run
        self._run_id = ""
        # Between match_run's calls: the bytes of _buf it looked at already (no CR there),
        # and where the first line it has not checked starts; and the same after a match.
        self._run_scan = self._run_line = 0
        self._run_next = (0, 0)
        self._reset_event()

    def _reset_event(self) -> None:
        self._data = bytearray()
        self._type = ""
        self._oversize = 0
        self._has_id = False  # an id: field in this event (else it keeps the last one)

    def new_connection(self) -> None:
        """Forget a partial line or event (the connection ended); keep the last event ID."""
        self._buf.clear()
        self._scanned = self._run_scan = self._run_line = 0
        self._skip_lf = False
        self._bom = True
        self._discard = None
        self._id_buffer = self.last_id
        self._reset_event()

    def clean(self) -> bool:
        """At an event boundary, nothing pending: :meth:`match_run` may be used."""
        return not (
            self._data
            or self._type
            or self._oversize
            or self._skip_lf
            or self._bom
            or self._discard is not None
            or self._id_buffer != self.last_id
        )

    def match_run(
        self, chunk: bytes | bytearray | memoryview, shape: RunShape, first: int
    ) -> list[bytes] | None:
        """The fast path, for a :meth:`clean` parser: add ``chunk`` to the buffer and return
        the data of the complete events in it (base64 decoded for a binary shape) when they
        are all in ``shape`` with the ids ``first``, ``first + 1``, ...; :meth:`commit_run`
        then consumes them. None when anything is unusual (then call ``feed(b"")``, which
        parses the buffer the general way); ``[]`` when no event is complete yet.

        What this accepts, the general parser would return as the same events with the same
        data (so a malformed event is never delivered here: it falls back), without any line
        loop in Python: one split of the read, the ids compared with the expected ones in one
        string, the data lines checked with one count.
        """
        buf = self._buf
        scan = self._run_scan
        buf += chunk
        self._run_end = 0
        if buf.find(b"\r", scan) >= 0:
            return None  # CR line endings: the general parser
        end = _rfind_blank(buf, max(scan - 1, 0))
        if end < 0:
            if len(buf) > self.max_data + 64:
                return None  # an overlong line: the general parser discards it
            pieces: list[bytes] = []
            rest = self._run_line
        else:
            if end + 2 > self.max_data:
                return None  # one of the events may be over the limit
            found = self._match_events(buf, end, shape, first, scan)
            if found is None:
                return None
            pieces, n = found
            self._run_end = rest = end + 2
            self._run_id = f"{shape.stream}-{first + n - 1}"
        # The complete lines of the next event, which waits for its blank line: id: and
        # data: only (their effect waits for the dispatch anyway; any other line, such as
        # retry: or a comment, takes effect at once, so the general parser takes it).
        nl = buf.find(b"\n", max(rest, scan))
        while nl >= 0:
            if not (buf.startswith(b"data: ", rest) or buf.startswith(b"id: ", rest)):
                return None
            rest = nl + 1
            nl = buf.find(b"\n", rest)
        self._run_next = (len(buf), rest)
        return pieces

    def _match_events(
        self, buf: bytearray, end: int, shape: RunShape, first: int, scan: int
    ) -> tuple[list[bytes], int] | None:
        """The events in ``buf[:end]`` (no CR there), if all in ``shape``, numbered from
        ``first``: their data, and how many. The bytes before ``scan - 1`` hold no blank line,
        nor any LF from ``_run_line`` on."""
        stop = _find_blank(buf, max(scan - 1, 0))  # where the first event ends
        if stop == end or stop > _BIG_EVENT:  # big events: one at a time, without copies
            pieces: list[bytes] = []
            start = 0
            while True:
                piece = self._match_one(buf, start, stop, shape, first + len(pieces), scan)
                if piece is None:
                    return None
                pieces.append(piece)
                if stop == end:
                    return pieces, len(pieces)
                start = stop + 2
                stop = _find_blank(buf, start)
        lines = bytes(buf[:end]).split(b"\n")
        n = len(lines) // 3 + 1
        if (
            len(lines) % 3 != 2
            or b"".join(lines[2::3])
            or b"\n".join(lines[0::3]) != shape.expected_ids(first, n)
        ):
            return None
        data_lines = lines[1::3]
        if end > _LINE_BY_LINE * n:
            # events of some KiB: check and slice each data line (joining them again to check
            # them in one pass would copy every byte twice more)
            if not all(line.startswith(b"data: ") for line in data_lines):
                return None
            try:
                if shape.binary:
                    pieces = [b64decode(memoryview(line)[6:]) for line in data_lines]
                else:
                    pieces = [line[6:] for line in data_lines]
            except (binascii.Error, ValueError):
                return None  # the general parser and decode_data give the typed error
            return pieces, n
        data = b"\n".join(data_lines)
        if data[:6] != b"data: " or data.count(b"\ndata: ") != n - 1:
            return None  # every data line starts "data: ", none is left out
        pieces = data[6:].split(b"\ndata: ")
        if shape.binary:
            try:
                a2b = binascii.a2b_base64  # small events: below pybase64's threshold
                pieces = [a2b(p, strict_mode=True) for p in pieces]
            except (binascii.Error, ValueError):
                return None  # the general parser and decode_data give the typed error
        return pieces, n

    def _match_one(
        self, buf: bytearray, start: int, end: int, shape: RunShape, seq: int, scan: int
    ) -> bytes | None:
        """:meth:`match_run` for ``buf[start:end]`` holding one event's lines (the second of
        which, if it started at ``_run_line``, holds no LF before ``scan``)."""
        nl = buf.find(b"\n", start, end)
        if (
            nl < 0
            or buf[start:nl] != shape.expected_ids(seq, 1)
            or buf[nl + 1 : nl + 7] != b"data: "
        ):
            return None
        if buf.find(b"\n", max(nl + 1, scan if self._run_line == nl + 1 else 0), end) >= 0:
            return None
        with memoryview(buf) as view, view[nl + 7 : end] as data:
            if not shape.binary:
                return bytes(data)
            try:
                return b64decode(data)
            except (binascii.Error, ValueError):
                return None

    def commit_run(self) -> None:
        """Consume what :meth:`match_run` matched."""
        end = self._run_end
        if end:
            del self._buf[:end]
            self._run_end = 0
            self.last_id = self._id_buffer = self._run_id
        scanned, line = self._run_next
        self._run_scan = scanned - end
        self._run_line = line - end
        self._scanned = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Event]:
        """Parse more of the stream; return the events it completed."""
        buf = self._buf
        buf += chunk
        if self._bom:
            if len(buf) < 3 and _BOM.startswith(bytes(buf)):
                return []
            if buf.startswith(_BOM):
                del buf[:3]
            self._bom = False
        out: list[Event] = []
        if not self._skip_lf and self._discard is None:
            self._complete_lines(buf, out)
        pos = 0
        end = len(buf)
        while pos < end:
            if self._skip_lf:
                self._skip_lf = False
                if buf[pos] == 10:
                    pos += 1
                    continue
            i = _line_end(buf, pos + self._scanned, end)
            if i < 0:
                self._scanned = end - pos
                break
            self._scanned = 0
            if buf[i] == 13:
                self._skip_lf = True
            if self._discard is not None:
                self._end_discard(i - pos)
            else:
                self._line(bytes(buf[pos:i]), out)
            pos = i + 1
        if pos:
            del buf[:pos]
        if len(buf) > self.max_data + 64:
            self._start_discard(len(buf))
        self._run_scan = self._run_line = 0  # match_run looks at what is left again
        return out

    def _complete_lines(self, buf: bytearray, out: list[Event]) -> None:
        """The fast path: when the complete lines in ``buf`` end in LF alone (no CR: what
        servers send), split them all at once and handle ``data:`` lines inline; the line
        loop in :meth:`feed` then sees only the last, partial line."""
        last = buf.rfind(b"\n")
        if last < 0 or buf.find(b"\r", 0, last) >= 0:
            return
        lines = bytes(buf[:last]).split(b"\n")
        del buf[: last + 1]
        self._scanned = 0
        handle = self._line
        limit = self.max_data
        for line in lines:
            if not line:
                self._dispatch(out)
            elif (
                line[:6] == b"data: "
                and not self._oversize
                and len(self._data) + len(line) - 6 <= limit
            ):
                data = self._data
                data += line[6:]
                data.append(10)
            elif line[:4] == b"id: " and b"\0" not in line:
                self._id_buffer = line[4:].decode("utf-8", "replace")
                self._has_id = True
            else:
                handle(line, out)

    def _start_discard(self, size: int) -> None:
        """An overlong line: keep only its field name, drop its bytes as they come."""
        if self._discard is None:
            head = bytes(self._buf[:16])
            self._discard = head.partition(b":")[0]
            if self._discard == b"data":
                self._oversize += len(self._data) + size
                self._data = bytearray()
        elif self._discard == b"data":
            self._oversize += size
        self._buf.clear()
        self._scanned = 0

    def _end_discard(self, tail: int) -> None:
        if self._discard == b"data":
            self._oversize += tail
        self._discard = None

    def _line(self, line: bytes, out: list[Event]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == 58:  # ":" comment (keepalives)
            self.comments += 1
            return
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            if self._oversize:
                self._oversize += len(value) + 1
            elif len(self._data) + len(value) > self.max_data:
                self._oversize = len(self._data) + len(value)
                self._data = bytearray()
            else:
                self._data += value
                self._data.append(10)
        elif field == b"event":
            self._type = value.decode("utf-8", "replace")
        elif field == b"id":
            if b"\0" not in value:
                self._id_buffer = value.decode("utf-8", "replace")
                self._has_id = True
        elif field == b"retry" and value.isdigit() and len(value) <= 18:  # int() limits
            self.retry = int(value)

    def _dispatch(self, out: list[Event]) -> None:
        self.last_id = self._id_buffer
        if not self._data and not self._oversize:
            self._reset_event()
            return
        data = bytes(self._data[:-1]) if self._data else b""
        event = Event(self._type or "message", data, self.last_id, self._oversize, self._has_id)
        out.append(event)
        self._reset_event()
