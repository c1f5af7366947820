"""Unix domain stream sockets, blocking driver."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._stream.blocking import StreamChannel
from ipcwire._stream.connect import connect_stream
from ipcwire._stream.listener import StreamListener
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions, reject_unknown
from ipcwire.unix._socket import (
    bind_listener,
    connect_when_room,
    explain_connect_error,
    make_authorizer,
    peer_info,
    resolve,
)
from ipcwire.unix._trust import check_server, trusted_uids

__all__ = ["connect", "listen"]


def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    allow_uids: Iterable[int] | None = None,
    **kw: Any,
) -> StreamChannel:
    """Connect to a Unix socket; see :func:`ipcwire.connect`.

    ``allow_uids``: the uids the server may run as, checked (SO_PEERCRED) before anything is
    sent; by default your own uid and root for an abstract name, anyone for a path.

    Raises:
        PermissionDenied: the server's uid is not allowed (nothing was sent to it).
    """
    reject_unknown(kw, endpoint, ("timeout", "reconnect", "allow_uids"))
    addr = resolve(endpoint)
    trusted = trusted_uids(addr, allow_uids)

    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT

    def open_socket(remaining: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(remaining)
            connect_when_room(
                sock, addr.sockaddr, time.monotonic() + remaining, endpoint.url, limit
            )
            check_server(sock, addr, endpoint.url, trusted, explicit=allow_uids is not None)
            return sock
        except BaseException:
            sock.close()
            raise

    return connect_stream(
        options,
        open_socket,
        lambda exc: explain_connect_error(exc, addr, endpoint.url),
        timeout=timeout,
        reconnect=reconnect,
        peer=lambda s: peer_info(s, str(addr)),
    )


def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    mode: int = 0o600,
    allow_uids: Iterable[int] | None = None,
    backlog: int = 128,
    **kw: Any,
) -> StreamListener:
    """Listen on a Unix socket; see :func:`ipcwire.listen`."""
    reject_unknown(kw, endpoint, ("mode", "allow_uids", "backlog"))
    addr = resolve(endpoint)
    if allow_uids is None and addr.abstract is not None:
        allow_uids = (os.getuid(),)  # abstract names have no file mode to protect them
    sock, cleanup = bind_listener(addr, endpoint.url, mode=mode, backlog=backlog)
    return StreamListener(
        sock,
        endpoint.url,
        options,
        authorize=make_authorizer(endpoint.url, str(addr), allow_uids),
        on_close=cleanup,
        max_ready=backlog,
    )
