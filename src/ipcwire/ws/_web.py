"""Browser-facing helpers shared by the WebSocket and SSE servers (no I/O, no web library).

* The ``Origin`` check against cross-site WebSocket hijacking (and cross-site event streams):
  a request without ``Origin`` comes from a non-browser client and is allowed; a browser's
  request is allowed when its origin is the server's own (``Origin`` names the ``Host`` the
  request was sent to, and that host is an IP address, ``localhost`` or the listener's own
  name, so DNS rebinding cannot fake it), or is in the ``origins=`` allow-list (``"*"``
  allows every origin).
* ``pages=``: a few small static files (``{"/": "<html>..."}``) served beside the endpoint,
  so a test or a demo page comes from the same origin as the channel.
"""

from __future__ import annotations

import ipaddress
import mimetypes
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from ipcwire.errors import ConfigurationError

__all__ = ["OriginPolicy", "Page", "build_pages"]


def _normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _split(origin: str) -> SplitResult | None:
    """``origin`` split as a URL; None when it is not one (``urlsplit`` raises ValueError for
    a malformed IPv6 host, ``http://[``, which any client may send)."""
    try:
        return urlsplit(origin)
    except ValueError:
        return None


def _trusted_host(host: str, url: str) -> bool:
    """Whether a Host header names this server without trusting DNS: an IP address,
    localhost, or the very name the listener was given."""
    try:
        name = urlsplit("//" + host).hostname or ""
    except ValueError:  # not a host at all ("[x"): not this server's name
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    if name == (urlsplit(url).hostname or "").lower():
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which browser origins may use an endpoint.

    ``allowed`` is None for "same origin only" (the default), else the normalized allow-list.
    """

    allowed: frozenset[str] | None = None

    @classmethod
    def build(cls, origins: Iterable[str] | str | None, url: str) -> OriginPolicy:
        """From the ``origins=`` option: None, ``"*"``, or a list of origins.

        Raises:
            ConfigurationError: an entry that is not an origin (``scheme://host[:port]``).
        """
        if origins is None:
            return cls(None)
        items = [origins] if isinstance(origins, str) else list(origins)
        out: set[str] = set()
        for item in items:
            if not isinstance(item, str):
                raise ConfigurationError(f"origins= for {url} must hold strings, not {item!r}")
            norm = _normalize(item)
            if norm not in {"*", "null"}:
                parts = _split(norm)
                if parts is None or not parts.scheme or not parts.netloc or parts.path:
                    raise ConfigurationError(
                        f"origins= for {url}: {item!r} is not an origin; write it as a browser "
                        f"sends it, scheme://host[:port] such as 'http://localhost:8000'"
                    )
            out.add(norm)
        return cls(frozenset(out))

    def refusal(self, origin: str | None, host: str | None, url: str) -> str | None:
        """Why a request with this ``Origin`` (and ``Host``) header is refused, or None."""
        if origin is None:
            return None  # not a browser: browsers always send Origin on these requests
        norm = _normalize(origin)
        if self.allowed is not None:
            if "*" in self.allowed or norm in self.allowed:
                return None
        elif host is not None:
            # (an Origin that is no URL, "http://[", is no origin of ours: refused below; it
            # made the server answer 500 with an ERROR traceback, ValueError from urlsplit)
            parts = _split(norm)
            host = host.strip().lower()
            if parts is not None and parts.scheme in ("http", "https") and parts.netloc == host:
                if _trusted_host(host, url):
                    return None
                return (
                    f"origin {origin!r} may not use {url}: the page claims the server's own "
                    f"origin through the name {host!r}, which is not this server's (a DNS "
                    f"rebinding attack looks like this). Connect by IP address or localhost, "
                    f"or listen with origins=[{origin!r}]"
                )
        return (
            f"origin {origin!r} may not use {url}: a page from another site must not reach "
            f"this endpoint through a visitor's browser (cross-site hijacking). If that page "
            f"is yours, listen with origins=[{origin!r}]"
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One static file: its content type and body."""

    content_type: str
    body: bytes


def build_pages(pages: Mapping[str, str | bytes] | None, url: str) -> dict[str, Page]:
    """``{"/path": text or bytes}`` into pages with content types guessed from the path.

    Raises:
        ConfigurationError: a path that does not start with ``/``.
    """
    out: dict[str, Page] = {}
    for path, content in (pages or {}).items():
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"pages= for {url}: paths start with '/', not {path!r}")
        guessed = mimetypes.guess_type(path)[0] if "." in path.rsplit("/", 1)[-1] else None
        ctype = guessed or "text/html"
        body = content.encode() if isinstance(content, str) else bytes(content)
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        out[path] = Page(ctype, body)
    return out
