"""WebSocket, asyncio driver: ``websockets.asyncio`` (native asyncio protocols)."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from typing import Any, cast

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from ipcwire._core.handshake import ClientHandshake
from ipcwire._core.url import Endpoint
from ipcwire.aio._accept import accept_backoff
from ipcwire.aio._read_size import bound_reads
from ipcwire.aio._timeouts import within_at
from ipcwire.options import ChannelOptions
from ipcwire.ws._admission import ServerSettings, listen_address, warn_if_plaintext
from ipcwire.ws._aio_channel import AioWsChannel
from ipcwire.ws._aio_listener import AioWsListener
from ipcwire.ws._closing import AioCloseBound
from ipcwire.ws._common import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    check_compression,
    check_headers,
    check_timings,
    client_handshake,
    connect_address,
    open_error,
    rejected_error,
    token_timeout,
    welcome_step,
)
from ipcwire.ws._fast import install
from ipcwire.ws._log import ws_log
from ipcwire.ws._queue import fast_aio_assembler
from ipcwire.ws._sockets import aio_open, bind, peer_of, set_nodelay, tls_mismatch
from ipcwire.ws._writer import AioPongs

__all__ = ["AioWsChannel", "AioWsListener", "connect", "listen"]

log = logging.getLogger("ipcwire")


# -- connecting -----------------------------------------------------------------------------
class AioClientConn(AioPongs, AioCloseBound, ClientConnection):
    """The library's client connection, receiving through ``ipcwire.ws._fast`` into a queue
    bounded by bytes (``ipcwire.ws._queue``; a closing handshake the server never finishes
    is cut, ``ipcwire.ws._closing``)."""

    def __init__(self, protocol: Any, **kwargs: Any) -> None:
        install(protocol)
        super().__init__(protocol, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        bound_reads(transport)
        super().connection_made(transport)
        self.recv_messages = fast_aio_assembler(self.recv_messages)


async def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    origin: str | None = None,
    headers: Mapping[str, str] | None = None,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    compression: str | None = None,
    **kw: Any,
) -> AioWsChannel:
    """Connect to a WebSocket endpoint; see :func:`ipcwire.aio.connect` and the docs page.

    Raises:
        The same errors as the blocking :func:`ipcwire.ws.blocking.connect`.
    """
    addr = connect_address(endpoint, kw, ssl)
    url = endpoint.url
    ping_interval, ping_timeout, close_timeout = check_timings(
        url, ping_interval, ping_timeout, close_timeout
    )
    check_compression(url, compression)
    check_headers(url, origin, headers)
    loop = asyncio.get_running_loop()
    sock, deadline = await aio_open(addr, url, timeout=timeout, reconnect=reconnect)
    set_nodelay(sock)
    peer = peer_of(sock, addr)
    hs, extra = client_handshake(options, headers)
    tls: dict[str, Any] = {}
    if addr.secure:
        tls = {"ssl": ssl or True, "server_hostname": server_hostname or addr.host}
    limit = max(deadline - loop.time(), 0.001)
    try:
        conn = await ws_connect(
            addr.uri(),
            sock=sock,
            origin=Origin(origin) if origin is not None else None,
            additional_headers=extra,
            compression=compression,
            proxy=None,
            open_timeout=limit,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=options.max_frame,
            create_connection=AioClientConn,
            logger=ws_log(url),
            **tls,
        )
    except InvalidStatus as exc:
        sock.close()
        raise rejected_error(exc, hs, url) from None
    except Exception as exc:
        sock.close()
        raise tls_mismatch(open_error(exc, url, limit), exc, url, addr.secure) from exc
    try:
        async with within_at(deadline):
            send_limit = await _finish_client(conn, hs, url)
    except TimeoutError:
        conn.transport.abort()
        raise token_timeout(url) from None
    except BaseException:
        conn.transport.abort()
        raise
    return AioWsChannel(
        conn, url, options.codec, max_frame=options.max_frame, send_limit=send_limit, peer=peer
    )


async def _finish_client(conn: ClientConnection, hs: ClientHandshake, url: str) -> int:
    """The rest of the ipcwire handshake after the 101: the proof exchange with a token."""
    step = welcome_step(hs, conn.response, url)
    while not step.done:
        try:
            if step.send:
                await conn.send(step.send.rstrip(b"\n"), text=True)
            reply = await conn.recv(decode=False)
        except ConnectionClosed as exc:
            raise open_error(exc, url, 0) from exc
        step = hs.receive(reply)
    return hs.peer_max_frame


async def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    ssl: ssl_module.SSLContext | None = None,
    backlog: int = 128,
    origins: Iterable[str] | str | None = None,
    pages: Mapping[str, str | bytes] | None = None,
    mode: int | None = None,
    allow_uids: Iterable[int] | None = None,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    compression: str | None = None,
    **kw: Any,
) -> AioWsListener:
    """Listen for WebSocket clients; see :func:`ipcwire.aio.listen` and the docs page.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError.
    """
    addr = listen_address(endpoint, kw, ssl, mode=mode, allow_uids=allow_uids)
    sock, port, authorize, cleanup = bind(
        addr, endpoint.url, backlog=backlog, mode=mode, allow_uids=allow_uids
    )
    try:
        settings = ServerSettings.build(
            addr,
            port,
            options,
            origins=origins,
            pages=pages,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            compression=compression,
        )
        listener = AioWsListener(settings, authorize=authorize, on_close=cleanup, max_ready=backlog)
        tls: dict[str, Any] = {"ssl": ssl} if ssl is not None else {}
        accept_backoff(sock, settings.url)
        server = await serve(
            listener.handler,
            sock=sock,
            process_request=listener.process_request,
            process_response=listener.process_response,
            server_header="ipcwire",
            compression=compression,
            open_timeout=options.handshake_timeout,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            close_timeout=settings.close_timeout,
            max_size=options.max_frame,
            logger=ws_log(settings.url, listener=True),
            # a callable in place of the class (the library only calls it)
            create_connection=cast(type[ServerConnection], listener.new_connection),
            backlog=backlog,
            **tls,
        )
    except BaseException:
        sock.close()
        cleanup()
        raise
    listener.attach(server)
    warn_if_plaintext(addr, settings.url, options.token)
    return listener
