"""WebSocket, asyncio driver: ``websockets.asyncio`` (native asyncio protocols)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConcurrencyError, ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.typing import Origin

from ipcwire._core.codecs import Codec
from ipcwire._core.handshake import ClientHandshake
from ipcwire._core.url import Endpoint
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import ChannelClosed, ConfigurationError, FrameTooLarge, IpcwireError, Timeout
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.ws._common import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    ERROR_HEADER,
    HELLO_HEADER,
    POLICY_VIOLATION,
    WELCOME_HEADER,
    Admission,
    ServerSettings,
    admit,
    check_payload,
    client_handshake,
    close_reason,
    closed_error,
    concurrency_error,
    finish_admission,
    log_refusal,
    open_error,
    rejected_error,
    resolve,
    welcome_step,
)
from ipcwire.ws._sockets import Authorizer, aio_open, bind, peer_of
from ipcwire.ws.blocking import _CONNECT_OPTIONS, _LISTEN_OPTIONS, _check_tls, _with_url

__all__ = ["AioWsChannel", "AioWsListener", "connect", "listen"]

log = logging.getLogger("ipcwire")


class AioWsChannel(AioChannel):
    """One WebSocket connection as an ipcwire channel (asyncio)."""

    def __init__(
        self,
        conn: Connection,
        url: str,
        codec: Codec,
        *,
        max_frame: int,
        send_limit: int,
        peer: PeerInfo | None,
    ) -> None:
        self.url = url
        self._conn = conn
        self._codec = codec
        self._decode = codec.decode
        self._text = codec.name == "json"
        self._max_frame = max_frame
        self._send_limit = send_limit
        self._peer = peer
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._too_large_reported = False
        self._sent = 0
        self._received = 0
        self._bytes_sent = 0
        self._bytes_received = 0

    # -- sending ----------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        payload = check_payload(self._codec, obj, self._send_limit, self.url)
        try:
            if timeout is None:
                await self._conn.send(payload, text=self._text)
            else:
                async with asyncio.timeout(timeout):
                    await self._conn.send(payload, text=self._text)
        except TimeoutError:
            raise self._send_timeout(timeout) from None
        except ConnectionClosed as exc:
            raise self._error(exc, sending=True) from exc
        self._sent += 1
        self._bytes_sent += len(payload)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        payloads = [check_payload(self._codec, o, self._send_limit, self.url) for o in objs]
        if not payloads:
            return
        conn = self._conn
        write = conn.protocol.send_text if self._text else conn.protocol.send_binary
        try:
            async with asyncio.timeout(timeout):
                async with conn.send_context():  # all frames, then one flush and drain
                    for p in payloads:
                        write(p)
        except TimeoutError:
            raise self._send_timeout(timeout) from None
        except ConnectionClosed as exc:
            raise self._error(exc, sending=True) from exc
        self._sent += len(payloads)
        self._bytes_sent += sum(len(p) for p in payloads)

    def _send_timeout(self, timeout: float | None) -> Timeout:
        return Timeout(
            f"{self.url} is not reading: the message is queued but the write buffer stayed "
            f"full for {timeout} s",
            endpoint=self.url,
        )

    # -- receiving --------------------------------------------------------------------------
    async def recv(self, *, timeout: float | None = None) -> Any:
        data = await self._recv_raw(timeout)
        self._received += 1
        self._bytes_received += len(data)
        return self._decode(data)  # type: ignore[arg-type]

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        decode = self._decode
        data = await self._recv_raw(timeout)
        out = [decode(data)]  # type: ignore[arg-type]
        nbytes = len(data)
        queued = _queued_frames(self._conn)
        while queued and queued[0].fin and (max_messages is None or len(out) < max_messages):
            try:
                data = await self._conn.recv(decode=False)  # a whole message is queued
            except ConnectionClosed:
                break
            nbytes += len(data)
            out.append(decode(data))  # type: ignore[arg-type]
        self._received += len(out)
        self._bytes_received += nbytes
        return out

    async def _recv_raw(self, timeout: float | None) -> bytes:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        try:
            if timeout is None:
                return await self._conn.recv(decode=False)
            async with asyncio.timeout(timeout):
                return await self._conn.recv(decode=False)
        except TimeoutError:
            raise Timeout(
                f"no message from {self.url} within {timeout} s", endpoint=self.url
            ) from None
        except ConcurrencyError:
            raise concurrency_error(self.url) from None
        except ConnectionClosed as exc:
            raise self._error(exc, sending=False) from exc

    def _error(self, exc: ConnectionClosed, *, sending: bool) -> IpcwireError:
        if self._closed:
            return ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        err = closed_error(
            exc,
            self.url,
            sending=sending,
            max_frame=self._max_frame,
            first_too_large=not sending and not self._too_large_reported,
        )
        if isinstance(err, FrameTooLarge):
            self._too_large_reported = True
        return err

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop.is_closed():
            self._conn.transport.abort()
            return
        self._closing = self._loop.create_task(self._conn.close())

    async def aclose(self) -> None:
        self.close()
        if self._closing is not None:
            await asyncio.shield(self._closing)  # bounded by close_timeout in the library

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

    @property
    def latency(self) -> float:
        """Round-trip time measured by the last keepalive ping, in seconds (0 before one)."""
        return self._conn.latency

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
        )


def _queued_frames(conn: Connection) -> Any:
    """The library's queue of received frames, to take only what is already here."""
    frames = getattr(conn.recv_messages, "frames", None)
    return getattr(frames, "queue", None)


# -- connecting -----------------------------------------------------------------------------
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
    reject_unknown(kw, endpoint, _CONNECT_OPTIONS)
    addr = resolve(endpoint, listening=False)
    url = endpoint.url
    if ssl is not None and not addr.secure:
        raise ConfigurationError(f"ssl= is for wss:// URLs, not {url}")
    loop = asyncio.get_running_loop()
    sock, deadline = await aio_open(addr, url, timeout=timeout, reconnect=reconnect)
    _nodelay(sock)
    peer = peer_of(sock, addr)
    hs, hello = client_handshake(options)
    extra: dict[str, str] = {HELLO_HEADER: hello}
    extra.update(headers or {})
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
            **tls,
        )
    except InvalidStatus as exc:
        sock.close()
        raise rejected_error(exc, hs, url) from None
    except Exception as exc:
        sock.close()
        raise open_error(exc, url, limit) from exc
    try:
        async with asyncio.timeout_at(deadline):
            send_limit = await _finish_client(conn, hs, url)
    except TimeoutError:
        conn.transport.abort()
        raise Timeout(f"{url} did not finish the token handshake in time", endpoint=url) from None
    except BaseException:
        conn.transport.abort()
        raise
    return AioWsChannel(
        conn, url, options.codec, max_frame=options.max_frame, send_limit=send_limit, peer=peer
    )


async def _finish_client(conn: ClientConnection, hs: ClientHandshake, url: str) -> int:
    welcome = conn.response.headers.get_all(WELCOME_HEADER) if conn.response else []
    step = welcome_step(hs, welcome[0] if welcome else None, url)
    while not step.done:
        try:
            if step.send:
                await conn.send(step.send.rstrip(b"\n"), text=True)
            reply = await conn.recv(decode=False)
        except ConnectionClosed as exc:
            raise open_error(exc, url, 0) from exc
        step = hs.receive(reply)
    return hs.peer_max_frame if welcome else hs.max_frame


# -- listening ------------------------------------------------------------------------------
class _Conn(ServerConnection):
    admission: Admission | None = None
    peer_info: PeerInfo | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _nodelay(transport.get_extra_info("socket"))
        super().connection_made(transport)


def _nodelay(sock: Any) -> None:
    """No Nagle delay on TCP (asyncio only sets it when the socket's proto says TCP)."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class AioWsListener(AioListener):
    """Accepts WebSocket clients (asyncio) and hands out :class:`AioWsChannel` objects."""

    def __init__(self, settings: ServerSettings, *, authorize: Authorizer, on_close: Any) -> None:
        self.url = settings.url
        self._settings = settings
        self._authorize = authorize
        self._on_close = on_close
        self._server: Server | None = None
        self._ready: asyncio.Queue[AioWsChannel | None] = asyncio.Queue()
        self._closed = False

    def process_request(self, c: ServerConnection, request: Request) -> Response | None:
        """Admission, from the upgrade request (see ``ipcwire.ws._common``)."""
        assert isinstance(c, _Conn)
        peer, refusal = self._authorize(c.transport.get_extra_info("socket"))
        c.peer_info = peer
        adm = c.admission = admit(self._settings, request.path, request.headers, refusal=refusal)
        if adm.status == 101:
            return None
        if adm.page is not None:
            headers = Headers(
                [
                    ("Content-Type", adm.page.content_type),
                    ("Content-Length", str(len(adm.page.body))),
                    ("Cache-Control", "no-cache"),
                    ("Connection", "close"),
                ]
            )
            return Response(200, "OK", headers, adm.page.body)
        response = c.respond(adm.status, adm.text)
        if adm.error_header is not None:
            response.headers[ERROR_HEADER] = adm.error_header
        if adm.error is not None:
            log_refusal(self.url, peer.address or "a client", adm.error)
        return response

    def process_response(self, c: ServerConnection, r: Request, response: Response) -> None:
        """Put the ipcwire welcome into the 101 response."""
        adm = c.admission if isinstance(c, _Conn) else None
        if adm is not None and adm.welcome and response.status_code == 101:
            response.headers[WELCOME_HEADER] = adm.welcome

    async def handler(self, c: ServerConnection) -> None:
        """Runs for each open connection: the first-message check, then hand it over."""
        assert isinstance(c, _Conn)
        assert c.admission is not None
        adm = c.admission
        settings = self._settings
        opts = settings.options
        if adm.pending and not await self._check_first_message(c, adm):
            return
        ch = AioWsChannel(
            c,
            self.url,
            opts.codec,
            max_frame=opts.max_frame,
            send_limit=adm.send_limit,
            peer=c.peer_info,
        )
        if self._closed:
            await ch.aclose()
            return
        self._ready.put_nowait(ch)
        await c.wait_closed()  # the channel owns the connection until it closes

    async def _check_first_message(self, c: ServerConnection, adm: Admission) -> bool:
        who = (c.peer_info.address if isinstance(c, _Conn) and c.peer_info else None) or "a client"
        try:
            async with asyncio.timeout(self._settings.options.handshake_timeout):
                first = await c.recv(decode=False)
        except TimeoutError:
            log_refusal(self.url, who, "no token within the handshake timeout")
            await c.close(POLICY_VIOLATION, "a token is required")
            return False
        except ConnectionClosed:
            return False
        reply, err = finish_admission(adm, first, self._settings.options.token)
        try:
            if reply:
                await c.send(reply, text=True)
            if err is not None:
                log_refusal(self.url, who, err)
                await c.close(POLICY_VIOLATION, close_reason(err))
                return False
        except ConnectionClosed:
            return False
        return True

    def attach(self, server: Server) -> None:
        self._server = server

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        try:
            async with asyncio.timeout(timeout):
                ch = await self._ready.get()
        except TimeoutError:
            raise Timeout(
                f"no client connected to {self.url} within {timeout} s", endpoint=self.url
            ) from None
        if ch is None:
            self._ready.put_nowait(None)  # wake any other accepting task too
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        return ch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.server.close()  # the listening socket, now
            self._server.close(close_connections=False)  # accepted channels stay open
        while not self._ready.empty():
            ch = self._ready.get_nowait()
            if ch is not None:
                ch.close()
        self._ready.put_nowait(None)
        if self._on_close is not None:
            self._on_close()

    @property
    def closed(self) -> bool:
        return self._closed


async def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    ssl: ssl_module.SSLContext | None = None,
    backlog: int = 128,
    origins: Iterable[str] | str | None = None,
    pages: Mapping[str, str | bytes] | None = None,
    mode: int = 0o600,
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
    reject_unknown(kw, endpoint, _LISTEN_OPTIONS)
    addr = resolve(endpoint, listening=True)
    _check_tls(addr, ssl, endpoint.url)
    sock, port, authorize, cleanup = bind(
        addr, endpoint.url, backlog=backlog, mode=mode, allow_uids=allow_uids
    )
    try:
        url = addr.listener_url(port)
        settings = ServerSettings.build(
            url,
            addr.path,
            _with_url(options, url),
            origins=origins,
            pages=pages,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            compression=compression,
        )
        listener = AioWsListener(settings, authorize=authorize, on_close=cleanup)
        tls: dict[str, Any] = {"ssl": ssl} if ssl is not None else {}
        server = await serve(
            listener.handler,
            sock=sock,
            process_request=listener.process_request,
            process_response=listener.process_response,
            server_header="ipcwire",
            compression=compression,
            open_timeout=options.handshake_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=options.max_frame,
            logger=log,
            create_connection=_Conn,
            backlog=backlog,
            **tls,
        )
    except BaseException:
        sock.close()
        cleanup()
        raise
    listener.attach(server)
    return listener
