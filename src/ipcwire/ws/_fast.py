"""A shorter road for frames under ipcwire's WebSocket connections (both drivers, both sides).

The websockets library parses every frame with nested generators (``Frame.parse`` and one
``read_exact`` per header field), builds every frame it sends in a ``BytesIO`` with an
``os.urandom`` call per masking key, and, in its threaded flavour, hands every message through
an ``Assembler`` that takes three locks and builds a deadline per call. Together they are the
larger part of what a message costs. This module keeps the library's protocol objects and
connections, and replaces only the steps a well-formed data frame takes:

* :class:`FastServerProtocol` / :class:`FastClientProtocol`: the frame loop reads a complete,
  valid frame straight from the reader's buffer (RFC 6455 section 5.2: header, extended
  length, masking key, payload), unmasks it from a view of the buffer (one copy instead of
  two) and gives it to the library's own ``recv_frame``, which keeps the state machine (pongs,
  fragments). A frame is consumed only once it is complete. Anything else (a reserved bit, an
  unknown opcode, wrong masking, a message over ``max_size``, a close frame, a continuation
  out of place, the end of the stream) leaves the buffer as it is and hands the connection to
  the library's own parser, which then reads that same frame, raises the same errors and
  closes with the same codes as it always does. Data frames are written by
  :meth:`FastFrames.frame_bytes` (control frames, compression and debug logging by the
  library).
* :mod:`ipcwire.ws._queue` has the queue between a connection's reader and ``recv()``: the
  threaded ``Assembler``'s common case in one short method, and flow control by bytes.

They are used only when the installed websockets has the attributes they rely on (checked
once, at import); otherwise the library's own classes run as they are.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Generator
from typing import Any, Final, cast

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.frames import BINARY, CONT, PING, PONG, TEXT, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import CLIENT, CONNECTING, SERVER, Protocol
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from ipcwire.ws._not_ws import stops_at_head

try:  # the library's C speedup, as its own frames use it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the pure-Python build
    from websockets.utils import apply_mask

__all__ = [
    "FAST",
    "FastClientProtocol",
    "FastFrames",
    "FastServerProtocol",
    "install",
]

_HEAD_SHORT: Final = struct.Struct("!BB")
_HEAD_MEDIUM: Final = struct.Struct("!BBH")
_HEAD_LONG: Final = struct.Struct("!BBQ")
_JOIN_BELOW: Final = 256 * 1024  # payloads up to this size go out in one write with the header

# opcode -> Opcode for the frames the fast path takes (control frames: ping and pong only)
_OPCODES: Final = {0: CONT, 1: TEXT, 2: BINARY, 9: PING, 10: PONG}


def _compatible() -> bool:
    """Whether this websockets keeps the state the fast path reads (checked on live objects)."""
    probe = ServerProtocol()
    reader = probe.reader
    return (
        hasattr(probe, "max_message_size")
        and hasattr(probe, "max_fragment_size")
        and hasattr(probe, "current_size")
        and isinstance(reader, StreamReader)
        and isinstance(getattr(reader, "buffer", None), bytearray)
        and hasattr(reader, "eof")
    )


FAST: Final = _compatible()


class FastFrames(Protocol):
    """:class:`~websockets.protocol.Protocol` with the fast frame loop and frame writer."""

    # limit_first_message(): the first data message has its own, smaller limit
    _ipcwire_limited = False
    _ipcwire_full: int | None = None

    def limit_first_message(self, limit: int) -> None:
        """Accept at most ``limit`` bytes for the first data message (a listener's token
        check, before the client is authenticated: its buffer is not for anyone to fill);
        the protocol's own limit applies from the next message on, whichever parser reads
        them (the switch happens in the parser, between two messages)."""
        self._ipcwire_full = self.max_message_size
        self._ipcwire_limited = True
        if self.max_message_size is None or limit < self.max_message_size:
            self.max_message_size = limit

    def lift_first_limit(self) -> None:
        """The protocol's own limit, from now on."""
        if self._ipcwire_limited:
            self._ipcwire_limited = False
            self.max_message_size = self._ipcwire_full

    def recv_frame(self, frame: Frame) -> None:
        super().recv_frame(frame)
        if self._ipcwire_limited and frame.fin and frame.opcode in (TEXT, BINARY, CONT):
            self.lift_first_limit()

    def parse(self) -> Generator[None]:
        if FAST and not self.extensions:  # compression rewrites frames: not here
            yield from self._fast_frames()
        # Not a frame the fast path takes: the library's loop reads it, from the same bytes.
        yield from Protocol.parse(self)

    def _fast_frames(self) -> Generator[None]:
        """Read well-formed frames until one is not; return with that one still unread."""
        reader = self.reader
        mask = self.side is SERVER
        while True:
            buf = reader.buffer
            while len(buf) < 2:
                if reader.eof:
                    return  # the library reports the end of the stream
                yield
            head1 = buf[0]
            head2 = buf[1]
            opcode = _OPCODES.get(head1 & 0x7F)  # None also when a reserved bit is set
            if opcode is None or (head2 & 0x80 != 0) is not mask:
                return  # "invalid opcode", "reserved bits must be 0", "incorrect masking"
            length = head2 & 0x7F
            start = 2 if length < 126 else 4 if length == 126 else 10
            while len(buf) < start:
                if reader.eof:
                    return
                yield
            if length == 126:
                length = int.from_bytes(buf[2:4], "big")
            elif length == 127:
                length = int.from_bytes(buf[2:10], "big")
            fin = head1 & 0x80 != 0
            current = self.current_size
            if opcode is CONT:
                if current is None:
                    return  # "unexpected continuation frame"
            elif opcode is TEXT or opcode is BINARY:
                if current is not None:
                    return  # "expected a continuation frame"
            elif not fin or length > 125:
                return  # "fragmented control frame", "control frame too long"
            limit = self.max_message_size
            if limit is not None and current is not None:
                limit -= current
            if self.max_fragment_size is not None:
                limit = (
                    self.max_fragment_size if limit is None else min(limit, self.max_fragment_size)
                )
            if limit is not None and length > limit:
                return  # PayloadTooBig, close code 1009
            if mask:
                start += 4  # the masking key
            end = start + length
            while len(buf) < end:
                if reader.eof:
                    return  # the stream ends inside the frame
                yield
            with memoryview(buf) as view:
                if mask:
                    data = apply_mask(view[start:end], bytes(view[start - 4 : start]))
                else:
                    data = view[start:end].tobytes()
            del buf[:end]
            frame = Frame(opcode, data, fin)
            if self.debug:
                self.logger.debug("< %s", frame)
            if fin and current is None and opcode is not PING:
                self.events.append(frame)  # all recv_frame does with a whole message or a pong
                if self._ipcwire_limited and opcode is not PONG:
                    self.lift_first_limit()
            else:
                self.recv_frame(frame)  # fragments, and the pong a ping needs

    def send_frame(self, frame: Frame) -> None:
        """Serialize a data frame with :meth:`frame_bytes`; control frames, compression and
        debug logging go the library's way."""
        opcode = frame.opcode
        if (
            not self.plain_frames()
            or not (opcode is BINARY or opcode is TEXT or opcode is CONT)
            or frame.rsv1
            or frame.rsv2
            or frame.rsv3
        ):
            super().send_frame(frame)
            return
        self.writes.extend(self.frame_bytes(frame.data, opcode, frame.fin))

    def plain_frames(self) -> bool:
        """Whether data frames go out as they are (no compression, no debug log of them)."""
        return FAST and not self.extensions and not self.debug

    def frame_bytes(self, data: Any, opcode: Opcode, fin: bool = True) -> list[bytes]:
        """A data frame as bytes to write (RFC 6455 section 5.2), with fewer copies than
        ``Frame.serialize``: header and payload in one piece up to 256 KiB, in two above
        (a write more beats copying a large payload again). A client's masking keys come from
        ``os.urandom`` like the library's, 1024 keys per call instead of one (5.3)."""
        length = len(data) if type(data) is bytes else memoryview(data).nbytes
        head1 = (0x80 if fin else 0) | opcode
        masked = self.side is CLIENT
        head2 = 0x80 if masked else 0
        if length < 126:
            header = _HEAD_SHORT.pack(head1, head2 | length)
        elif length < 65536:
            header = _HEAD_MEDIUM.pack(head1, head2 | 126, length)
        else:
            header = _HEAD_LONG.pack(head1, head2 | 127, length)
        payload: bytes
        if masked:
            key = self._mask_key()
            header += key
            payload = apply_mask(data, key)
        else:
            # a mutable buffer is copied, as the library does: the caller may reuse it while
            # the bytes wait in a transport's buffer
            payload = data if type(data) is bytes else bytes(data)
        if length <= _JOIN_BELOW:
            return [header + payload]
        return [header, payload]

    def _mask_key(self) -> bytes:
        pool: bytes | None = self.__dict__.get("_ipcwire_keys")
        pos: int = self.__dict__.get("_ipcwire_key_pos", 0)
        if pool is None or pos >= len(pool):
            pool = self.__dict__["_ipcwire_keys"] = os.urandom(4096)
            pos = 0
        self.__dict__["_ipcwire_key_pos"] = pos + 4
        return pool[pos : pos + 4]


class FastServerProtocol(ServerProtocol, FastFrames):
    """The library's server protocol with the fast frame loop."""


class FastClientProtocol(ClientProtocol, FastFrames):
    """The library's client protocol with the fast frame loop; it reads the head of the
    server's answer before the library does, and ends the handshake there when the answer
    is not a WebSocket endpoint's whatever its body (``ipcwire.ws._not_ws``): the library
    would wait for the body, which an event stream never ends."""

    def answer_first(self) -> Generator[None]:
        reader = self.reader
        while b"\r\n\r\n" not in reader.buffer and not reader.eof:
            if len(reader.buffer) > _MAX_HEAD:
                break  # (the library's parser refuses it)
            yield
        response = _early_answer(bytes(reader.buffer))
        if response is not None:  # as the library fails a handshake (client.py, parse)
            exc = InvalidStatus(response)
            response._exception = exc
            self.events.append(response)
            self.handshake_exc = exc
            self.send_eof()
            self.parser = self.discard()
            next(self.parser)
            yield
        yield from ClientProtocol.parse(self)


_MAX_HEAD: Final = 64 * 1024


def _early_answer(data: bytes) -> Response | None:
    """The answer's head as a Response (no body) when it shows no WebSocket endpoint gave it;
    None otherwise (the library parses it, body and all)."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        return None
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip()] = value.strip()
    status = int(parts[1])
    if status == 101 or not stops_at_head(status, headers.get("Content-Type") or ""):
        return None
    return Response(status, parts[2] if len(parts) > 2 else "", headers)


def install(protocol: Any) -> None:
    """Give a protocol object the fast frame loop (before its handshake completes).

    The library's ``connect``/``serve`` create the protocol themselves; the connection class
    calls this from its constructor. Its parser then switches to the fast loop after the
    HTTP handshake, when it starts reading frames. Other protocol classes are left alone.
    """
    if not FAST:
        return
    if type(protocol) is ServerProtocol:
        protocol.__class__ = FastServerProtocol
    elif type(protocol) is ClientProtocol:
        protocol.__class__ = FastClientProtocol
        client = cast(FastClientProtocol, protocol)
        if client.state is CONNECTING and not client.reader.buffer:  # (nothing read yet)
            client.parser = client.answer_first()  # (the library's has read nothing yet)
            next(client.parser)
