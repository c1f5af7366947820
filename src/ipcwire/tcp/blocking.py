"""TCP, blocking driver (TLS through an ``ssl.SSLContext``)."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._exposure import warn_if_exposed
from ipcwire._stream.blocking import StreamChannel
from ipcwire._stream.connect import PLAIN_HINT, connect_stream
from ipcwire._stream.listener import StreamListener
from ipcwire.channel import PeerInfo
from ipcwire.errors import IpcwireError
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.tcp._socket import (
    bind_listener,
    configure,
    explain_connect_error,
    keepalive_option,
    peer_info,
    resolve,
)

__all__ = ["connect", "listen"]


def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    ssl: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    **kw: Any,
) -> StreamChannel:
    """Connect over TCP; see :func:`ipcwire.connect` (``keepalive=``: docs/mechanisms/tcp.md)."""
    keepalive = keepalive_option(endpoint, kw)
    reject_unknown(kw, endpoint, ("timeout", "reconnect", "ssl", "server_hostname", "keepalive"))
    addr = resolve(endpoint, listening=False)

    def open_socket(remaining: float) -> socket.socket:
        sock = socket.create_connection((addr.host, addr.port), timeout=remaining)
        configure(sock, keepalive)
        return sock

    def explain(exc: OSError) -> IpcwireError | None:
        return explain_connect_error(exc, addr, endpoint.url)

    return connect_stream(
        options,
        open_socket,
        explain,
        timeout=timeout,
        reconnect=reconnect,
        peer=peer_info,
        ssl_context=ssl,
        server_hostname=server_hostname or addr.host,
        handshake_hint="" if ssl is not None else PLAIN_HINT,
    )


def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    ssl: ssl.SSLContext | None = None,
    backlog: int = 128,
    **kw: Any,
) -> StreamListener:
    """Listen on TCP (127.0.0.1 unless the URL names a host); see :func:`ipcwire.listen`
    (``keepalive=``, for every accepted connection: docs/mechanisms/tcp.md)."""
    keepalive = keepalive_option(endpoint, kw)
    reject_unknown(kw, endpoint, ("ssl", "backlog", "keepalive"))
    addr = resolve(endpoint, listening=True)
    sock = bind_listener(addr, endpoint.url, backlog)
    host, port = sock.getsockname()[:2]
    url = type(addr)(host, port).url()
    options = dataclasses.replace(options, url=url)  # the real port, for messages
    warn_if_exposed(url, host, token=options.token, tls=ssl is not None)

    def authorize(conn: socket.socket) -> tuple[PeerInfo, IpcwireError | None]:
        return peer_info(conn), None

    return StreamListener(
        sock,
        url,
        options,
        authorize=authorize,
        ssl_context=ssl,
        configure=lambda conn: configure(conn, keepalive),
        max_ready=backlog,
    )
