"""The asyncio WebSocket listener: ``websockets.asyncio.server`` with ipcwire's admission."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelClosed, Timeout
from ipcwire.ws._admission import (
    POLICY_VIOLATION,
    Admission,
    ServerSettings,
    admit,
    close_reason,
    finish_admission,
    log_refusal,
)
from ipcwire.ws._aio_channel import AioWsChannel
from ipcwire.ws._common import ERROR_HEADER, WELCOME_HEADER
from ipcwire.ws._fast import install
from ipcwire.ws._sockets import Authorizer, set_nodelay

__all__ = ["AioWsListener", "ServerConn"]

log = logging.getLogger("ipcwire")


class ServerConn(ServerConnection):
    admission: Admission | None = None
    peer_info: PeerInfo | None = None

    def __init__(self, protocol: Any, *args: Any, **kwargs: Any) -> None:
        install(protocol)  # the fast frame loop (ipcwire.ws._fast)
        super().__init__(protocol, *args, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        set_nodelay(transport.get_extra_info("socket"))
        super().connection_made(transport)


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
        assert isinstance(c, ServerConn)
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
        adm = c.admission if isinstance(c, ServerConn) else None
        if adm is not None and adm.welcome and response.status_code == 101:
            response.headers[WELCOME_HEADER] = adm.welcome

    async def handler(self, c: ServerConnection) -> None:
        """Runs for each open connection: the first-message check, then hand it over."""
        assert isinstance(c, ServerConn)
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
        info = c.peer_info if isinstance(c, ServerConn) else None
        who = (info.address if info else None) or "a client"
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
