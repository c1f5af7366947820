"""WebSocket, blocking driver: ``websockets.sync`` (threads and sockets; never asyncio).

The library reads each connection in its own thread and hands whole messages to ``recv``;
``send`` writes from the caller's thread. The listener accepts in the caller's ``accept()``
and runs each connection's opening handshake in a short-lived thread, so a slow or hostile
client never delays the others.
"""

from __future__ import annotations

import ssl as ssl_module
import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin

from ipcwire._core.handshake import ClientHandshake
from ipcwire._core.url import Endpoint
from ipcwire._oserror import translate
from ipcwire._tls import SharedTls
from ipcwire.errors import ChannelBroken
from ipcwire.options import ChannelOptions
from ipcwire.ws._admission import ServerSettings, listen_address, warn_if_plaintext
from ipcwire.ws._channel import WsChannel
from ipcwire.ws._closing import SyncCloseBound
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
from ipcwire.ws._listener import WsListener
from ipcwire.ws._log import ws_log
from ipcwire.ws._queue import fast_assembler
from ipcwire.ws._sockets import bind, open_blocking, peer_of, tls_mismatch
from ipcwire.ws._writer import WriteBuffer

__all__ = ["WsChannel", "WsListener", "connect", "listen"]


# -- connecting -----------------------------------------------------------------------------
class ClientConn(SyncCloseBound, ClientConnection):
    """The library's client connection, receiving through ``ipcwire.ws._fast`` (a closing
    handshake the server never finishes is cut, ``ipcwire.ws._closing``)."""

    def __init__(self, sock: Any, protocol: Any, **kwargs: Any) -> None:
        install(protocol)
        if isinstance(sock, ssl_module.SSLSocket):  # read by one thread, written by others
            sock = SharedTls(sock)
        super().__init__(WriteBuffer(sock), protocol, **kwargs)  # type: ignore[arg-type]
        self.recv_messages = fast_assembler(self.recv_messages)


def connect(
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
) -> WsChannel:
    """Connect to a WebSocket endpoint; see :func:`ipcwire.connect` and the docs page.

    Raises:
        ConnectionRefused: nothing listens there, or no endpoint at that path (404).
        AuthenticationFailed, PermissionDenied (Origin refused), HandshakeError (codec),
        Timeout, ConfigurationError, InvalidURL.
    """
    addr = connect_address(endpoint, kw, ssl)
    url = endpoint.url
    ping_interval, ping_timeout, close_timeout = check_timings(
        url, ping_interval, ping_timeout, close_timeout
    )
    check_compression(url, compression)
    check_headers(url, origin, headers)
    sock, deadline = open_blocking(addr, url, timeout=timeout, reconnect=reconnect)
    peer = peer_of(sock, addr)
    hs, extra = client_handshake(options, headers)
    limit = max(deadline - time.monotonic(), 0.001)
    made: list[ClientConn] = []

    def connection(*args: Any, **kwargs: Any) -> ClientConn:
        made.append(ClientConn(*args, **kwargs))
        return made[-1]

    try:
        conn = ws_connect(
            addr.uri(),
            sock=sock,
            ssl=ssl if addr.secure else None,
            server_hostname=server_hostname,
            origin=Origin(origin) if origin is not None else None,
            additional_headers=extra,
            compression=compression,
            proxy=None,
            open_timeout=limit,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=options.max_frame,
            create_connection=cast(type[ClientConn], connection),  # (only called)
            logger=ws_log(url),
            legacy=True,
        )
    except InvalidStatus as exc:
        sock.close()
        raise rejected_error(exc, hs, url) from None
    except Exception as exc:
        sock.close()
        failed = _reader_failure(made)
        if failed is not None:  # this side could not run the connection (out of descriptors)
            raise translate(failed, url, "connecting to") from failed
        raise tls_mismatch(open_error(exc, url, limit), exc, url, addr.secure) from exc
    if conn.response is None:  # the reader ended before the answer: it could not start
        conn.close_socket()
        failed = _reader_failure(made)
        if failed is not None:
            raise translate(failed, url, "connecting to") from failed
        raise ChannelBroken(f"{url} closed the connection during the handshake", endpoint=url)
    try:
        send_limit = _finish_client(conn, hs, url, deadline)
    except BaseException:
        conn.close_socket()
        raise
    ch = WsChannel(
        conn,
        url,
        options.codec,
        max_frame=options.max_frame,
        send_limit=send_limit,
        peer=peer,
        close_timeout=close_timeout,
    )
    ch.close_at_exit()
    return ch


def _reader_failure(made: list[ClientConn]) -> OSError | None:
    """Why the connection's reader thread could not run, if that is why it ended (it records
    it, then ends; the library may wake the connecting thread first)."""
    if not made:
        return None
    made[0].recv_events_thread.join(1.0)
    return made[0].ipcwire_error


def _finish_client(conn: ClientConnection, hs: ClientHandshake, url: str, deadline: float) -> int:
    """The rest of the ipcwire handshake after the 101: the proof exchange with a token."""
    step = welcome_step(hs, conn.response, url)
    while not step.done:
        try:
            if step.send:
                conn.send(step.send.rstrip(b"\n"), text=True)
            reply = conn.recv(max(deadline - time.monotonic(), 0.001), decode=False)
        except TimeoutError:
            raise token_timeout(url) from None
        except ConnectionClosed as exc:
            raise open_error(exc, url, 0) from exc
        step = hs.receive(reply)
    return hs.peer_max_frame


def listen(
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
) -> WsListener:
    """Listen for WebSocket clients; see :func:`ipcwire.listen` and the docs page.

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
    except BaseException:
        sock.close()
        cleanup()
        raise
    listener = WsListener(
        sock, settings, authorize=authorize, ssl_context=ssl, on_close=cleanup, max_ready=backlog
    )
    warn_if_plaintext(addr, settings.url, options.token)
    return listener
