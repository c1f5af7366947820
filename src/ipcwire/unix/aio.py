"""Unix domain stream sockets, asyncio driver."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._oserror import translate
from ipcwire._stream.aio import AioStreamChannel
from ipcwire._stream.aio_connect import aio_connect_stream
from ipcwire._stream.aio_listener import AioStreamListener
from ipcwire.aio._accept import accept_backoff
from ipcwire.errors import IpcwireError
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions, reject_unknown
from ipcwire.unix._aio_socket import aio_connect_when_room
from ipcwire.unix._socket import (
    backlog_full,
    bind_listener,
    explain_connect_error,
    make_authorizer,
    peer_info,
    resolve,
)
from ipcwire.unix._trust import check_server, trusted_uids

__all__ = ["connect", "listen"]


async def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    allow_uids: Iterable[int] | None = None,
    **kw: Any,
) -> AioStreamChannel:
    """Connect to a Unix socket; see :func:`ipcwire.aio.connect`.

    ``allow_uids``: the uids the server may run as, checked (SO_PEERCRED) before anything is
    sent; by default your own uid and root for an abstract name, anyone for a path.

    Raises:
        PermissionDenied: the server's uid is not allowed (nothing was sent to it).
    """
    reject_unknown(kw, endpoint, ("timeout", "reconnect", "allow_uids"))
    addr = resolve(endpoint)
    trusted = trusted_uids(addr, allow_uids)
    loop = asyncio.get_running_loop()

    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    busy = False  # the last attempt found the listener's backlog full

    def mark_busy() -> None:
        nonlocal busy
        busy = True

    async def create(factory: Any) -> Any:
        # Connect our own socket and hand it over: uvloop takes an address as a C string, so
        # an abstract name (a leading NUL byte) would reach it empty (EINVAL). Not with
        # loop.sock_connect: it takes a full backlog's EAGAIN for "in progress", waits for
        # a writable socket, and hands over one that never connected.
        nonlocal busy
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await aio_connect_when_room(sock, addr.sockaddr, mark_busy)
            busy = False
            # before the protocol exists: its connection_made sends the hello
            check_server(sock, addr, endpoint.url, trusted, explicit=allow_uids is not None)
            return await loop.create_unix_connection(factory, sock=sock)
        except BaseException:
            sock.close()
            raise

    def explain(exc: OSError) -> IpcwireError:
        return explain_connect_error(exc, addr, endpoint.url) or translate(
            exc, endpoint.url, "connecting to"
        )

    return await aio_connect_stream(
        options,
        create,
        explain,
        timeout=timeout,
        reconnect=reconnect,
        peer=lambda s: peer_info(s, str(addr)),
        timed_out=lambda: backlog_full(endpoint.url, limit) if busy else None,
    )


async def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    mode: int = 0o600,
    allow_uids: Iterable[int] | None = None,
    backlog: int = 128,
    **kw: Any,
) -> AioStreamListener:
    """Listen on a Unix socket; see :func:`ipcwire.aio.listen`."""
    reject_unknown(kw, endpoint, ("mode", "allow_uids", "backlog"))
    addr = resolve(endpoint)
    if allow_uids is None and addr.abstract is not None:
        allow_uids = (os.getuid(),)
    sock, cleanup = bind_listener(addr, endpoint.url, mode=mode, backlog=backlog)
    listener = AioStreamListener(
        endpoint.url,
        options,
        authorize=make_authorizer(endpoint.url, str(addr), allow_uids),
        on_close=cleanup,
        max_ready=backlog,
    )
    accept_backoff(sock, endpoint.url)
    try:
        server = await asyncio.get_running_loop().create_unix_server(
            listener.server_factory(), sock=sock, backlog=backlog
        )
    except BaseException:
        sock.close()
        cleanup()
        raise
    listener.attach(server)
    return listener
