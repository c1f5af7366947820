"""Endpoint URLs, parsed without I/O.

``scheme://host:port/path?key=value``, plus the forms without an authority that some schemes
use: ``unix:///abs/path``, ``unix:@abstract-name``, ``pipe:``, ``signal:``, ``clipboard:``.
Query parameters carry options (``?codec=json&framing=ndjson``); keyword arguments win over
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

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
    query = ""
    if "?" in rest:
        rest, _, query = rest.partition("?")
    params = QueryParams(parse_qsl(query, keep_blank_values=True))
    if not rest.startswith("//"):
        # scheme:opaque (unix:@name, unix:relative.sock, pipe:, signal:TERM)
        return Endpoint(url=shown, scheme=scheme, path=unquote(rest), params=params)
    parts = urlsplit("x:" + rest)
    try:
        port = parts.port
    except ValueError:
        raise InvalidURL(
            f"{shown!r} has a port that is not a number from 0 to 65535", endpoint=shown
        ) from None
    host = parts.hostname or ""  # an IPv6 literal comes without its brackets
    return Endpoint(
        url=shown, scheme=scheme, host=host, port=port, path=unquote(parts.path), params=params
    )
