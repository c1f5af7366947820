"""Where the websockets library's log lines for ipcwire's connections go, and in what words.

The library logs each server connection's "connection open" and "connection closed" at
INFO, naming nothing (200 clients: 200 lines of each, no endpoint), and its asyncio server's
"server listening on" names the socket it was given: for ``ws+unix`` the private directory
the listener binds in before renaming the socket into place, not the endpoint. Such
per-connection chatter is for debugging: it goes to the ``ipcwire.ws.library`` logger (a
child of ``ipcwire``, so it still reaches ``ipcwire``'s handlers) at DEBUG, each line naming
the endpoint's URL and, on a listener, the peer; "server listening on ..." says the URL.
What the library logs at WARNING or above keeps its level, with the same names. Its
"keepalive ping failed" (ERROR, with a traceback, when the connection it found dead is
closed under it: the channel already raised ``ChannelBroken`` saying the peer did not
answer) becomes one INFO line naming the endpoint and the peer.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final

from ipcwire.channel import describe_peer

__all__ = ["LIBRARY_LOG", "ws_log"]

LIBRARY_LOG: Final = logging.getLogger("ipcwire.ws.library")


class _ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """The logger websockets writes to for one endpoint's connections (see the module)."""

    def __init__(self, url: str, peer: str, listener: bool) -> None:
        super().__init__(LIBRARY_LOG, {})
        self._url = url
        self._peer = peer
        self._ask = listener and not peer  # each connection's peer is asked (_peer_of)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if msg == "keepalive ping failed":
            level, msg, args = logging.INFO, "websocket keepalive ended: %s", (sys.exc_info()[1],)
            kwargs.pop("exc_info", None)
        else:
            if msg == "server listening on %s":  # (the socket's name: ws+unix's private dir)
                msg, args = "listening", ()
            if level < logging.WARNING:
                level = logging.DEBUG
        if not self.logger.isEnabledFor(level):
            return
        who = _peer_of(kwargs.get("extra")) if self._ask else self._peer
        prefix = f"{self._url}" + (f" ({who})" if who else "") + ": "
        if args:
            msg, args = "%s" + str(msg), (prefix, *args)
        else:  # (not %-formatted by logging: the URL may hold a %)
            msg = prefix + str(msg)
        self.logger.log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs


def _peer_of(extra: Any) -> str:
    """The peer of the connection websockets names in a record's ``extra``, if it can tell."""
    conn = extra.get("websocket") if isinstance(extra, dict) else None
    if conn is None:
        return ""
    try:
        info = getattr(conn, "peer_info", None)  # (an ipcwire ServerConn, once admitted)
        if info is not None:
            return describe_peer(info)
        remote = conn.remote_address
    except Exception:  # (a weak proxy to a connection that is gone; no transport yet)
        return ""
    if isinstance(remote, tuple) and len(remote) >= 2:
        return f"{remote[0]}:{remote[1]}"
    return ""


def ws_log(
    url: str, *, listener: bool = False, peer: str = ""
) -> logging.LoggerAdapter[logging.Logger]:
    """The logger to give websockets for the connections of ``url``: a client's, or a
    ``listener``'s (its lines name each connection's peer: ``peer`` when it is known for
    all of them)."""
    return _ConnectionLog(url, peer, listener)
