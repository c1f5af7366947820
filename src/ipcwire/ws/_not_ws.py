"""Telling an answer that does not come from a WebSocket endpoint from a WebSocket server's
refusal (the client's side of the opening handshake).

``ws://`` pointed at the port of another HTTP service (an ``sse+http://`` listener, an
``http://`` one, any web server) gets an HTTP answer that is not 101. Taken as a WebSocket
server's refusal it was misread: an event stream's 401 became "AuthenticationFailed ... this
event stream requires a token" though a token was passed, and an open event stream (200,
never ending) a handshake Timeout. Where the answer itself shows that no WebSocket endpoint
gave it, the error says so (``RemoteProtocolError``): the status, what answered, and the fix.
A WebSocket server's 401, 403, 404 ... keep their meanings (``_common.rejected_error``).

The signs, each of which no WebSocket endpoint gives in answer to an upgrade request:

* a 2xx status (a WebSocket server switches protocols with 101, or refuses with an error);
* ``Content-Type: text/event-stream`` (Server-Sent Events);
* 405 with an ``Allow`` header that does not list GET (the upgrade is a GET);
* ipcwire's ``X-Ipcwire-Error`` from a server whose ``Server`` header is not ``ipcwire``:
  ipcwire's WebSocket listeners (both APIs) always send ``Server: ipcwire``; its
  ``sse+http://`` listener, which refuses with the same header, runs on aiohttp.

The 2xx and event-stream answers are recognised from the response head (``ipcwire.ws._fast``),
before its body, which an event stream never ends.
"""

from __future__ import annotations

from typing import Any, Final

from ipcwire.errors import RemoteProtocolError

__all__ = ["not_websocket", "stops_at_head"]

SSE_TYPE: Final = "text/event-stream"
_ERROR_HEADER: Final = "X-Ipcwire-Error"  # (_common.ERROR_HEADER; no import cycle)


def stops_at_head(status: int, content_type: str) -> bool:
    """Whether an answer with this head is not a WebSocket endpoint's, whatever its body (so
    the body need not be read: an event stream's never ends)."""
    return (200 <= status < 300) or content_type.lower().startswith(SSE_TYPE)


def not_websocket(status: int, headers: Any, url: str) -> RemoteProtocolError | None:
    """The error for an answer to the upgrade that did not come from a WebSocket endpoint
    (see the module), or None when it may be a WebSocket server's refusal."""
    ctype = headers.get("Content-Type") or ""
    server = headers.get("Server") or ""
    allow = headers.get("Allow")
    if ctype.lower().startswith(SSE_TYPE):
        kind = "an event stream (Server-Sent Events: connect with sse+http:// or sse+https://)"
    elif 200 <= status < 300:
        kind = "a plain HTTP endpoint"
    elif status == 405 and allow is not None and "GET" not in allow.upper():
        kind = f"an HTTP endpoint that takes {allow} (ipcwire's http:// takes POST)"
    elif headers.get(_ERROR_HEADER) is not None and server.strip().lower() != "ipcwire":
        kind = (
            "an ipcwire listener that is not a WebSocket one (ipcwire's WebSocket listeners "
            "answer with Server: ipcwire; its sse+http:// listener runs on aiohttp)"
        )
    else:
        return None
    what = ", ".join(
        f"{name} {value}" for name, value in (("Content-Type", ctype), ("Server", server)) if value
    )
    return RemoteProtocolError(
        f"something listens at {url} but it is not a WebSocket endpoint: it answered the "
        f"upgrade with HTTP {status}" + (f" ({what})" if what else "") + f"; it looks like "
        f"{kind}. Check the URL's scheme and port",
        endpoint=url,
    )
