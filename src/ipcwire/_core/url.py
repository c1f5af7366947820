"""Endpoint URLs, parsed without I/O.

``scheme://host:port/path?key=value``, plus the forms without an authority that some schemes
use: ``unix:///abs/path``, ``unix:@abstract-name``, ``pipe:``, ``signal:``, ``clipboard:``.
Query parameters carry options (``?codec=json&framing=ndjson``); keyword arguments win over
them.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote, unquote_to_bytes, urlsplit

from ipcwire.errors import InvalidURL

__all__ = ["Endpoint", "QueryParams", "parse_url", "redact"]


class QueryParams(dict[str, str]):
    """A URL's query parameters, remembering which names were asked for (``get``, ``[]``,
    ``in``, ``pop``), so that ``connect()``/``listen()`` can refuse a parameter that no
    option reads: a misspelt ``?codc=json`` was ignored without a word."""

    __slots__ = ("asked",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        super().__init__(items or [])
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)

    def pop(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().pop(key, default)

    def unasked(self) -> list[str]:
        """The names given that no option asked for, sorted."""
        return sorted(set(self) - self.asked)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed endpoint URL. Which fields matter depends on the scheme."""

    url: str
    scheme: str
    host: str = ""
    port: int | None = None
    path: str = ""
    params: dict[str, str] = field(default_factory=QueryParams)

    def __str__(self) -> str:
        return self.url


# Query parameters that are secrets: read into the options, never part of ``Endpoint.url``
# (which is shown: listener.url, repr, every error's message and endpoint, log lines, and
# handshake refusals sent to an unauthenticated peer).
_SECRET_PARAMS: Final = frozenset({"token"})


def redact(url: str) -> str:
    """``url`` without its secret query parameters (``?token=...``); the rest unchanged."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    parts = query.split("&")
    kept = [p for p in parts if unquote(p.partition("=")[0]) not in _SECRET_PARAMS]
    if len(kept) == len(parts):
        return url
    return base + ("?" + "&".join(kept) if kept else "")


def parse_url(url: str) -> Endpoint:
    """Split an endpoint URL into its parts. ``Endpoint.url`` is the URL without its secret
    query parameters (``token=``), which stay in ``params``.

    Raises:
        InvalidURL: no scheme, a bad port, or a malformed authority.
    """
    return parse_url_as(url, redact(url) if isinstance(url, str) else url)


def parse_url_as(url: str, shown: str) -> Endpoint:
    """:func:`parse_url` of ``url``, which is ``shown`` (in its ``url`` and its errors)."""
    if not isinstance(url, str) or ":" not in url:
        raise InvalidURL(
            f"{shown!r} is not an endpoint URL; write scheme:... such as unix:///run/app.sock "
            f"or tcp://127.0.0.1:7000 (`ipcwire platforms` lists the schemes)",
            endpoint=shown if isinstance(shown, str) else None,
        )
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if not scheme or not (scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)):
        raise InvalidURL(
            f"{shown!r} has no valid scheme before ':' (a letter, then letters, digits, + - .)",
            endpoint=shown,
        )
    _check_text(url, shown)
    query = ""
    if "?" in rest:
        rest, _, query = rest.partition("?")
    params = QueryParams(parse_qsl(query, keep_blank_values=True))
    if not rest.startswith("//"):
        # scheme:opaque (unix:@name, unix:relative.sock, pipe:, signal:TERM)
        path = _checked_path(_decode_path(scheme, rest, shown), shown)
        return Endpoint(url=shown, scheme=scheme, path=path, params=params)
    try:
        parts = urlsplit("x:" + rest)
    except ValueError as exc:  # unbalanced brackets: urllib's "Invalid IPv6 URL"
        raise _bad_authority(shown, exc) from None
    try:
        host = parts.hostname or ""  # an IPv6 literal comes without its brackets
    except ValueError as exc:  # [zz]: urllib checks what is in brackets is an IP address
        raise _bad_authority(shown, exc) from None
    try:
        port = parts.port
    except ValueError:
        raise InvalidURL(
            f"{shown!r} has a port that is not a number from 0 to 65535", endpoint=shown
        ) from None
    if any(c.isspace() or not c.isprintable() for c in host):
        raise InvalidURL(
            f"{shown!r}: the host {host!r} has a space or control character in it (a "
            f"percent-escape such as %00 or %20 is not decoded in a host); write the host "
            f"name or address as it is",
            endpoint=shown,
        )
    path = _checked_path(_decode_path(scheme, parts.path, shown), shown)
    if scheme == "mq" and not path:
        _check_encodable(scheme, host, shown)  # mq://name: the name is a file's (its lock's)
    return Endpoint(url=shown, scheme=scheme, host=host, port=port, path=path, params=params)


def _check_text(url: str, shown: str) -> None:
    """A URL must be text that UTF-8 can encode (no lone surrogate, as ``os.fsdecode`` of
    undecodable bytes leaves: under a non-UTF-8 locale, every non-ASCII command-line argument
    and environment variable)."""
    try:
        url.encode()
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start]
        where = f"{bad!a} at position {exc.start}"
        instead = f"; percent-escape those bytes instead: {_escaped(shown)}"
        enc = sys.getfilesystemencoding()
        if enc.replace("-", "").lower() != "utf8":
            why = (
                f"has bytes that this locale's file-system encoding ({enc}) cannot decode "
                f"({where}): Python turns them into lone surrogates, as it does for every "
                f"non-ASCII command-line argument and environment variable under a non-UTF-8 "
                f"locale such as LC_ALL=C. Run with a UTF-8 locale (LC_ALL=C.UTF-8) or "
                f"PYTHONUTF8=1{instead.replace('; p', ', or p')}"
            )
        else:
            why = (
                f"has a character that is not valid text ({where}: a lone surrogate, as "
                f"os.fsdecode() leaves for bytes that are not UTF-8, such as a file name in "
                f"another encoding){instead}"
            )
        raise InvalidURL(f"{shown!a} {why}", endpoint=ascii(shown)) from None


def _escaped(url: str) -> str:
    """``url`` with each non-ASCII character written as its UTF-8 bytes' percent-escapes, and
    each surrogate that stands for a byte (U+DC80..U+DCFF, as os.fsdecode leaves) as that
    byte's: the same file name in any locale."""
    return re.sub(r"[^\x00-\x7f]", lambda m: quote(m[0], safe="", errors="surrogateescape"), url)


# Schemes whose path names a file. Their percent-escapes are the file name's bytes, whatever
# they are (os.fsdecode: they round-trip to the same bytes on disk, in any locale).
_BYTES_SCHEMES: Final = frozenset({"unix", "fifo", "spool", "shm"})
# Schemes whose path or name also names a file but whose drivers hand it on as text (posix_ipc
# for mq, the HTTP, WebSocket and gRPC stacks for *+unix): UTF-8 only.
_TEXT_SCHEMES: Final = frozenset({"mq", "http+unix", "ws+unix", "grpc+unix"})
_ESCAPES: Final = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def _decode_path(scheme: str, raw: str, shown: str) -> str:
    """The path part ``raw`` with its percent-escapes decoded, as the scheme reads them.

    Raises:
        InvalidURL: a file name this locale cannot encode, or (a text scheme) escapes that
            are not UTF-8.
    """
    if scheme in _TEXT_SCHEMES:
        try:
            path = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            what = "queue name" if scheme == "mq" else "socket path"
            raise InvalidURL(
                f"{shown!r}: the {what}'s percent-escapes are not UTF-8 text, which {scheme}:"
                f" needs (its library takes the {what} as text); "
                + (
                    "write the name in UTF-8"
                    if scheme == "mq"
                    else "use a path that is UTF-8 (unix:// takes a path of any bytes)"
                ),
                endpoint=shown,
            ) from None
        if not path.startswith("@"):
            _check_encodable(scheme, path, shown)
        return path
    if scheme not in _BYTES_SCHEMES:
        return unquote(raw)
    if unquote(raw[:3]).startswith("@"):
        # An abstract Unix socket name (unix:@name): bytes the kernel takes as they are, UTF-8
        # for text and each escape that is not UTF-8 its own byte (not a file: no locale).
        return unquote(raw, errors="surrogateescape")
    path = _ESCAPES.sub(lambda m: os.fsdecode(unquote_to_bytes(m[0])), raw)
    _check_encodable(scheme, path, shown)
    return path


def _check_encodable(scheme: str, path: str, shown: str) -> None:
    """``path`` must be encodable in the file-system encoding (os.fsencode): under an ASCII
    locale (LC_ALL=C without UTF-8 mode) a non-ASCII file name written as text is not."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError as exc:
        enc = sys.getfilesystemencoding()
        fix = "Run with a UTF-8 locale (LC_ALL=C.UTF-8) or PYTHONUTF8=1"
        if scheme in _BYTES_SCHEMES:
            fix += f", or percent-escape the path's bytes: {_escaped(shown)}"
        raise InvalidURL(
            f"{shown!a}: the {'name' if scheme == 'mq' else 'path'} {path!a} cannot be "
            f"encoded in this locale's file-system encoding ({enc}; {exc.object[exc.start]!a} "
            f"at position {exc.start}), so no file can be named by it: {fix}",
            endpoint=ascii(shown),
        ) from None


def _checked_path(path: str, shown: str) -> str:
    """``path`` (percent-escapes decoded), refused if it holds a NUL, which no file name may
    (an abstract Unix socket's name, ``unix:@name``, may)."""
    if "\0" in path and not path.startswith("@"):
        raise InvalidURL(
            f"{shown!r}: the path {path!r} has a NUL character in it (%00), which no file name "
            f"may hold; remove it",
            endpoint=shown,
        )
    return path


def _bad_authority(shown: str, exc: ValueError) -> InvalidURL:
    return InvalidURL(
        f"{shown!r} has a malformed host ({exc}): an IPv6 address goes in brackets with the "
        f"port after them, such as tcp://[::1]:7000; any other host without brackets, such as "
        f"tcp://127.0.0.1:7000 or tcp://localhost:7000",
        endpoint=shown,
    )
