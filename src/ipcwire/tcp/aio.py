"""TCP, asyncio driver (TLS through an ``ssl.SSLContext``)."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import ssl as _ssl  # the module; `ssl` is also a parameter name below
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._exposure import warn_if_exposed
from ipcwire._stream.aio import AioStreamChannel
from ipcwire._stream.aio_connect import aio_connect_stream
from ipcwire._stream.aio_listener import AioStreamListener
from ipcwire._stream.connect import NO_TLS_HINT, PLAIN_HINT, tls_error
from ipcwire.aio._accept import accept_backoff
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelBroken, IpcwireError
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


async def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    ssl: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    **kw: Any,
) -> AioStreamChannel:
    """Connect over TCP; see :func:`ipcwire.aio.connect` (``keepalive=``:
    docs/mechanisms/tcp.md)."""
    keepalive = keepalive_option(endpoint, kw)
    reject_unknown(kw, endpoint, ("timeout", "reconnect", "ssl", "server_hostname", "keepalive"))
    addr = resolve(endpoint, listening=False)
    loop = asyncio.get_running_loop()

    def create(factory: Any) -> Any:
        if ssl is not None:
            return loop.create_connection(
                factory, addr.host, addr.port, ssl=ssl, server_hostname=server_hostname or addr.host
            )
        return loop.create_connection(factory, addr.host, addr.port)

    def explain(exc: OSError) -> IpcwireError | None:
        if isinstance(exc, _ssl.SSLError):
            return tls_error(exc, endpoint.url)
        if ssl is not None and isinstance(exc, ConnectionResetError) and exc.errno is None:
            # asyncio's TLS transport lost the connection during the handshake (no errno):
            # the server hung up on the TLS greeting
            return ChannelBroken(
                f"{endpoint.url} closed the connection during the TLS handshake: {NO_TLS_HINT}",
                endpoint=endpoint.url,
            )
        return explain_connect_error(exc, addr, endpoint.url)

    def peer(sock: Any) -> PeerInfo:
        configure(sock, keepalive)
        return peer_info(sock)

    return await aio_connect_stream(
        options,
        create,
        explain,
        timeout=timeout,
        reconnect=reconnect,
        peer=peer,
        handshake_hint="" if ssl is not None else PLAIN_HINT,
    )


async def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    ssl: ssl.SSLContext | None = None,
    backlog: int = 128,
    **kw: Any,
) -> AioStreamListener:
    """Listen on TCP (127.0.0.1 unless the URL names a host); see :func:`ipcwire.aio.listen`
    (``keepalive=``, for every accepted connection: docs/mechanisms/tcp.md)."""
    keepalive = keepalive_option(endpoint, kw)
    reject_unknown(kw, endpoint, ("ssl", "backlog", "keepalive"))
    addr = resolve(endpoint, listening=True)
    sock = bind_listener(addr, endpoint.url, backlog)
    host, port = sock.getsockname()[:2]
    url = type(addr)(host, port).url()
    options = dataclasses.replace(options, url=url)  # the real port, for messages
    warn_if_exposed(url, host, token=options.token, tls=ssl is not None)

    def authorize(conn: Any) -> tuple[PeerInfo, IpcwireError | None]:
        configure(conn, keepalive)
        return peer_info(conn), None

    listener = AioStreamListener(url, options, authorize=authorize, max_ready=backlog)
    accept_backoff(sock, url)
    try:
        server = await asyncio.get_running_loop().create_server(
            listener.server_factory(),
            sock=sock,
            ssl=ssl,
            backlog=backlog,
            # a client that stalls its TLS handshake goes after handshake_timeout, as on the
            # blocking listener (asyncio's own default is 60 s)
            ssl_handshake_timeout=options.handshake_timeout if ssl is not None else None,
        )
    except BaseException:
        sock.close()
        raise
    listener.attach(server)
    return listener
