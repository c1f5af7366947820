"""The little HTTP/1.1 the SSE client needs, without I/O: one GET, one streamed response
(and the DELETE that tells the server the client is done with its stream).

A response head is parsed once it is whole (bounded, 64 KiB); the body is either chunked
(what aiohttp and most servers send for a stream) or raw until the connection closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

from ipcwire.errors import RemoteProtocolError

__all__ = [
    "ChunkedDecoder",
    "IdentityDecoder",
    "ResponseHead",
    "build_request",
    "parse_head",
    "request_path",
    "same_path",
    "shown_path",
]

MAX_HEAD: Final = 64 * 1024
_HEXDIG: Final = b"0123456789abcdefABCDEF"


# -- paths: a URL's path (decoded, as Endpoint holds it) in a request line and back ---------
# (the ws:// mechanism uses these too)
def request_path(path: str) -> str:
    """``path`` (percent-decoded, as :class:`~ipcwire._core.url.Endpoint` holds it) as it goes
    in a request line: UTF-8, percent-encoded (``/é`` as ``/%C3%A9``, ``/a b`` as ``/a%20b``,
    a decoded ``%``, ``?`` or ``#`` as ``%25``, ``%3F``, ``%23``), with ``/`` and RFC 3986's
    other path characters as they are. A raw non-ASCII byte or space is not HTTP."""
    return quote(path, safe="/:@!$&'()*+,;=")


def shown_path(path: str) -> str:
    """``path`` (decoded) as a listener's URL shows it: readable (``/é`` stays ``/é``), with
    only what would read back as something else escaped (``%``, ``?``, ``#``, spaces and
    control characters), so that connecting to the URL a listener reports reaches it."""
    return "".join(
        quote(ch, safe="") if ch in "%?#" or ch.isspace() or not ch.isprintable() else ch
        for ch in path
    )


def same_path(request: str) -> str:
    """A request line's path (its query dropped), percent-decoded as
    :class:`~ipcwire._core.url.Endpoint` decodes a URL's path, so that ``/%C3%A9`` and ``/é``
    are the same endpoint."""
    return unquote(request.partition("?")[0]) or "/"


def build_request(
    host: str, path: str, headers: Mapping[str, str], *, method: str = "GET"
) -> bytes:
    """A request without a body (GET, or the DELETE that ends a stream) for ``path``
    (decoded: it is sent percent-encoded) on ``host`` (the Host header's value). UTF-8, as
    the WHATWG standard sends ``Last-Event-ID`` (an event id may be any text but LF, CR,
    NUL)."""
    lines = [f"{method} {request_path(path)} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """Status line and headers (names lowercased; repeated headers joined with ", ")."""

    status: int
    reason: str
    headers: dict[str, str]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


def parse_head(buf: bytes | bytearray, url: str) -> tuple[ResponseHead, int] | None:
    """The response head and its length in ``buf``, or None while it is incomplete.

    Raises:
        RemoteProtocolError: not HTTP, or a head over 64 KiB.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise RemoteProtocolError(f"{url} sent an HTTP response head over 64 KiB")
        if len(buf) >= 5 and not bytes(buf[:5]) == b"HTTP/":
            raise RemoteProtocolError(f"{url} did not answer with HTTP; is it an HTTP server?")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = parts[1] if len(parts) > 1 else ""
    if not parts[0].startswith("HTTP/1.") or not (
        len(status) == 3 and status.isascii() and status.isdigit()
    ):
        raise RemoteProtocolError(f"{url} sent a malformed HTTP status line: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise RemoteProtocolError(f"{url} sent a malformed HTTP header: {line[:100]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    reason = parts[2] if len(parts) > 2 else ""
    return ResponseHead(int(parts[1]), reason, headers), end + 4


class IdentityDecoder:
    """A body that runs until the connection closes."""

    done = False

    def feed(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """``data`` itself (valid until the caller's buffer changes: parse it at once)."""
        return data


class ChunkedDecoder:
    """``Transfer-Encoding: chunked`` (RFC 9112 section 7.1); ``done`` after the last chunk."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._buf = bytearray()
        self._left = 0  # payload bytes still to come in the current chunk
        self._state = "size"  # size | data | crlf | trailer | done
        self.done = False

    def feed(self, data: bytes | bytearray | memoryview) -> bytes | memoryview:
        """The payload bytes in ``data`` (possibly none yet): a view into ``data`` when it
        holds one piece of payload (valid until the caller's buffer changes: parse it at
        once), else the pieces joined (one copy). Only an incomplete chunk header or CRLF
        waits in the buffer for the next read.
        """
        buf = self._buf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        view = memoryview(data)
        size = len(view)
        out: list[memoryview] = []
        pos = 0
        while pos < size:
            if self._state == "data":
                take = min(self._left, size - pos)
                out.append(view[pos : pos + take])
                pos += take
                self._left -= take
                if self._left:
                    break
                self._state = "crlf"
            elif self._state == "crlf":
                if size - pos < 2:
                    break
                if view[pos : pos + 2].tobytes() != b"\r\n":
                    raise RemoteProtocolError(f"{self._url}: a chunk did not end with CRLF")
                pos += 2
                self._state = "size"
            elif self._state in ("size", "trailer"):
                nl = bytes(view[pos : pos + 4098]).find(b"\r\n")
                if nl < 0:
                    if size - pos > 4096:
                        raise RemoteProtocolError(f"{self._url}: a chunk header over 4 KiB")
                    break
                line = bytes(view[pos : pos + nl])
                pos += nl + 2
                if self._state == "trailer":
                    if not line:
                        self._state = "done"
                        self.done = True
                    continue
                size_text = line.split(b";", 1)[0].strip()
                # 1*HEXDIG and nothing else: int(text, 16) also takes a sign, "0x" and "_",
                # and a negative size would move this loop back in its input, for ever
                if not size_text or size_text.translate(None, _HEXDIG):
                    raise RemoteProtocolError(f"{self._url}: bad chunk size {size_text[:20]!r}")
                self._left = int(size_text, 16)
                self._state = "data" if self._left else "trailer"
            else:  # done: ignore anything after the last chunk
                pos = size
        if pos < size and self._state != "data":
            buf += view[pos:]  # the start of a chunk header or its CRLF
        if len(out) == 1:
            return out[0]
        return b"".join(out)
