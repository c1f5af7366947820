"""One line, not a traceback, for a client that does not speak HTTP/1.1 to an HTTP listener.

A gRPC client (HTTP/2 with prior knowledge: its preface is ``PRI * HTTP/2.0``), a TLS client
on a plain port, a client of ipcwire's own stream protocol (``tcp://`` at an ``http://``
port) or any garbage: aiohttp answers it ``400 Bad Request`` and closes the connection, which
is right, but logged it as an ERROR of ``aiohttp.server`` with a full traceback (``BadHttpMessage
... Pause on PRI/Upgrade``), or not at all (a first request with a bad method, at DEBUG). A
misdirected client is not a server bug: this is aiohttp's server logger for one listener
(``web.Server(logger=...)``, the hook aiohttp documents for it), which turns those records
into one WARNING of ``ipcwire`` naming the client and what it seems to be, bounded as other
listeners' refusals are (:class:`~ipcwire._droplog.DropLog`); every other record goes to
``aiohttp.server`` as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from aiohttp.http_exceptions import BadHttpMethod, BadStatusLine, HttpProcessingError

from ipcwire._droplog import DropLog

__all__ = ["MisdirectedLog", "describe"]

_AIOHTTP_LINE: Final = "Error handling request"  # (aiohttp's handle_error(): "... from %s")


def describe(exc: HttpProcessingError, url: str) -> tuple[str, str]:
    """What a request aiohttp could not parse seems to have come from: (a kind for the
    bounded log, the words after "sent ...")."""
    text = exc.message if isinstance(exc.message, str) else str(exc)
    lines = [s.strip() for s in text.splitlines() if s.strip() and s.strip() != "^"]
    reason = lines[0].rstrip(":") if lines else type(exc).__name__
    seen = f": {lines[1][:60]}" if len(lines) > 1 else ""
    scheme = url.split(":", 1)[0]
    if "PRI/Upgrade" in text or text.startswith("PRI"):
        return "an HTTP/2 client", (
            f"an HTTP/2 connection preface (PRI * HTTP/2.0): an HTTP/2 (gRPC?) client: "
            f"this endpoint speaks HTTP/1.1; check the URL's scheme (a gRPC server is "
            f"grpc://, this one is {scheme}://)"
        )
    if "HTTPS traffic" in text:
        return "a TLS client", (
            f"a TLS handshake: a TLS client (https://, wss://, a tcp:// client with ssl=) "
            f"at this plain-HTTP endpoint: connect with {scheme}:// and no TLS, or listen "
            f"with ssl= at the TLS scheme"
        )
    if '{"ipcwire"' in text:
        return "an ipcwire stream client", (
            f"ipcwire's stream handshake: a tcp:// or unix:// client: this endpoint speaks "
            f"HTTP/1.1; connect with {scheme}://"
        )
    if isinstance(exc, (BadHttpMethod, BadStatusLine)):
        return "not HTTP", (
            f"bytes that are not an HTTP/1.1 request ({reason}{seen}): a client of another "
            f"protocol (tcp://, ws://?) or garbage: this endpoint speaks HTTP/1.1; check the "
            f"client's URL"
        )
    return "a malformed HTTP request", (
        f"a malformed HTTP request ({reason}{seen}); it was answered {exc.code}"
    )


class MisdirectedLog(logging.Logger):
    """aiohttp's server logger for the listener at ``url`` (see the module's docstring)."""

    def __init__(self, url: str) -> None:
        super().__init__("aiohttp.server")
        self.url = url
        self._aiohttp = logging.getLogger("aiohttp.server")
        self._drops = DropLog(url, "clients answered 400")
        self._timer: asyncio.TimerHandle | None = None

    def _caught(self, msg: object, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
        exc = kw.get("exc_info")
        if not isinstance(exc, HttpProcessingError) or not str(msg).startswith(_AIOHTTP_LINE):
            return False
        remote = args[0] if args else None
        who = f"a client at {remote}" if remote else "a client"
        kind, what = describe(exc, self.url)
        self._drops.log(logging.WARNING, kind, "%s: %s sent %s", self.url, who, what)
        due = self._drops.due()
        if due is not None and self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return True
            self._timer = loop.call_later(max(due - time.monotonic(), 0.0), self.flush)
        return True

    def flush(self) -> None:
        """Write the count of what was not logged one by one (the window's end; close)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._drops.flush(final=True)

    # aiohttp's RequestHandler calls debug() and exception() (error()); the rest is forwarded.
    def debug(self, msg: object, *args: Any, **kw: Any) -> None:
        if not self._caught(msg, args, kw):
            self._aiohttp.debug(msg, *args, **kw)

    def info(self, msg: object, *args: Any, **kw: Any) -> None:
        self._aiohttp.info(msg, *args, **kw)

    def warning(self, msg: object, *args: Any, **kw: Any) -> None:
        self._aiohttp.warning(msg, *args, **kw)

    def error(self, msg: object, *args: Any, **kw: Any) -> None:
        if not self._caught(msg, args, kw):
            self._aiohttp.error(msg, *args, **kw)

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        self.error(msg, *args, exc_info=exc_info, **kw)

    def critical(self, msg: object, *args: Any, **kw: Any) -> None:
        self._aiohttp.critical(msg, *args, **kw)

    def log(self, level: int, msg: object, *args: Any, **kw: Any) -> None:
        self._aiohttp.log(level, msg, *args, **kw)
