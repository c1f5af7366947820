"""The asyncio WebSocket listener: ``websockets.asyncio.server`` with ipcwire's admission."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ipcwire._core.handshake import HANDSHAKE_MAX_FRAME
from ipcwire.aio._read_size import bound_reads
from ipcwire.aio._timeouts import within
from ipcwire.aio._without_loop import handed_to_loop
from ipcwire.aio.channel import AcceptQueue, AioChannel, AioListener
from ipcwire.channel import PeerInfo
from ipcwire.ws._admission import (
    POLICY_VIOLATION,
    Admission,
    ListenerCore,
    ServerSettings,
    admit,
    finish_admission,
)
from ipcwire.ws._aio_channel import AioWsChannel
from ipcwire.ws._closing import AioCloseBound
from ipcwire.ws._fast import FastFrames, install
from ipcwire.ws._queue import fast_aio_assembler
from ipcwire.ws._sockets import Authorizer, set_nodelay
from ipcwire.ws._writer import AioPongs

__all__ = ["AioWsListener", "ServerConn"]

log = logging.getLogger("ipcwire")


class ServerConn(AioPongs, AioCloseBound, ServerConnection):
    """Receives through ``ipcwire.ws._fast`` into a queue bounded by bytes
    (``ipcwire.ws._queue``); a closing handshake the peer never finishes is cut
    (``ipcwire.ws._closing``)."""

    admission: Admission | None = None
    peer_info: PeerInfo | None = None
    listener: AioWsListener | None = None  # until the channel is handed over
    counted = False  # takes one of the listener's backlog places
    room_waiter: asyncio.Future[None] | None = None  # its 101 waits for a place

    def __init__(self, protocol: Any, *args: Any, **kwargs: Any) -> None:
        install(protocol)  # the fast frame loop (ipcwire.ws._fast)
        super().__init__(protocol, *args, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        set_nodelay(transport.get_extra_info("socket"))
        bound_reads(transport)
        super().connection_made(transport)
        self.recv_messages = fast_aio_assembler(self.recv_messages)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.listener is not None:
            self.listener._let_go(self)
        super().connection_lost(exc)


class AioWsListener(ListenerCore, AioListener):
    """Accepts WebSocket clients (asyncio) and hands out :class:`AioWsChannel` objects."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        authorize: Authorizer,
        on_close: Any,
        max_ready: int = 128,
    ) -> None:
        super().__init__(settings, authorize=authorize, on_close=on_close)
        self._loop = asyncio.get_running_loop()
        self._server: Server | None = None
        self._ready: AcceptQueue[AioWsChannel] = AcceptQueue()
        # connections not handed over yet (in the HTTP handshake or the first-message check),
        # and the tasks of those handed over: close() cuts the former off, aclose() waits
        # for their tasks (the others belong to their channels)
        self._opening: set[ServerConn] = set()
        self._handed: set[asyncio.Task[Any]] = set()
        # At most ``backlog`` clients wait for accept() or are in their first-message check,
        # as with the blocking listener; the 101 of the others waits for room.
        self._max_ready = max(1, max_ready)
        self._admitting = 0
        self._room_waiters: deque[asyncio.Future[None]] = deque()

    def new_connection(self, *args: Any, **kwargs: Any) -> ServerConn:
        """The connection object for each client (``serve(create_connection=)``)."""
        conn = ServerConn(*args, **kwargs)
        if self._settings.options.token is not None and isinstance(conn.protocol, FastFrames):
            # the first message may be the token: small until then
            conn.protocol.limit_first_message(HANDSHAKE_MAX_FRAME)
        conn.listener = self
        self._opening.add(conn)
        return conn

    def _let_go(self, c: ServerConn) -> None:
        """``c`` is handed over or gone: no longer cut off at close, nor counted."""
        c.listener = None
        self._opening.discard(c)
        if c.room_waiter is not None:
            c.room_waiter.cancel()  # gone while it waited for a place (or closed)
        if c.counted:
            c.counted = False
            self._admitting -= 1
            self._wake_one()

    def _has_room(self) -> bool:
        return self._ready.qsize() + self._admitting < self._max_ready

    def _wake_one(self) -> None:
        while self._room_waiters and self._has_room():
            fut = self._room_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _must_wait(self) -> bool:
        """Whether a new client waits: no room, or others waited first (FIFO)."""
        waiters = self._room_waiters
        while waiters and waiters[0].done():  # gone or cut off while they waited
            waiters.popleft()
        if not waiters:
            return not self._has_room()
        self._wake_one()  # (room for the first, if there is)
        return True

    async def _wait_for_room(self, c: ServerConn) -> None:
        while self._must_wait():
            fut = c.room_waiter = asyncio.get_running_loop().create_future()
            self._room_waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake_one()  # it was this one's turn: pass it on
                else:
                    fut.cancel()
                raise
            finally:
                c.room_waiter = None
            if self._closed:
                return  # the library answers 503 (the connection is cut anyway)
            if self._has_room():
                break
        if c.listener is None:  # gone meanwhile: its turn goes to the next
            self._wake_one()
            return
        self._admitting += 1
        c.counted = True

    def process_request(self, c: ServerConnection, request: Request) -> Response | None:
        """Admission, from the upgrade request (see ``ipcwire.ws._admission``)."""
        assert isinstance(c, ServerConn)
        peer, refusal = self._authorize(c.transport.get_extra_info("socket"))
        c.peer_info = peer
        adm = c.admission = admit(self._settings, request.path, request.headers, refusal=refusal)
        return self._http_answer(c, adm, peer.address or "a client")

    async def process_response(self, c: ServerConnection, r: Request, response: Response) -> None:
        """Put the ipcwire welcome into the 101 response, once there is room for one more
        client (the client waits for its 101 meanwhile, as for a full blocking listener)."""
        assert isinstance(c, ServerConn)
        self._add_welcome(c.admission, response)
        adm = c.admission
        if adm is not None and not adm.pending and isinstance(c.protocol, FastFrames):
            c.protocol.lift_first_limit()  # (before the 101 lets the client send)
        if response.status_code == 101 and not self._closed:
            await self._wait_for_room(c)

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
        self._ready.put(ch)
        self._let_go(c)
        task = asyncio.current_task()
        assert task is not None
        self._handed.add(task)
        try:
            await c.wait_closed()  # the channel owns the connection until it closes
        finally:
            self._handed.discard(task)

    async def _check_first_message(self, c: ServerConnection, adm: Admission) -> bool:
        info = c.peer_info if isinstance(c, ServerConn) else None
        who = (info.address if info else None) or "a client"
        try:
            async with within(self._settings.options.handshake_timeout):
                first = await c.recv(decode=False)
        except TimeoutError:
            await c.close(POLICY_VIOLATION, self._no_token(who))
            return False
        except ConnectionClosed:
            return False
        reply, err = finish_admission(adm, first, self._settings.options.token)
        try:
            if reply:
                await c.send(reply, text=True)
            if err is not None:
                await c.close(POLICY_VIOLATION, self._refused(who, err))
                return False
        except ConnectionClosed:
            return False
        return True

    def attach(self, server: Server) -> None:
        self._server = server

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        ch = await self._ready.get(self.url, timeout)
        self._wake_one()
        return ch

    def close(self) -> None:
        if self._closed:
            return
        # another thread: the loop's objects are its own (done here, a waiting accept()
        # slept on until its timeout)
        if handed_to_loop(self._loop, self.close):
            return
        self._closed = True
        if self._server is not None:
            # the listening socket, now (handshakes still in flight get 503); accepted
            # channels stay open
            self._server.server.close()
        for fut in self._room_waiters:
            if not fut.done():
                fut.set_result(None)
        self._room_waiters.clear()
        for c in list(self._opening):  # clients not handed over: cut off
            transport = getattr(c, "transport", None)
            if transport is not None:
                transport.abort()
        self._ready.close()
        if self._on_close is not None:
            self._on_close()

    async def aclose(self) -> None:
        """Close, and wait (boundedly) until the clients cut off in their handshake are gone
        and a :meth:`serve` in this loop has closed its channels."""
        self.close()
        if self._server is not None:
            tasks = getattr(self._server, "handler_tasks", ())
            cut = [t for t in tasks if t not in self._handed]
            if cut:
                await asyncio.wait(cut, timeout=5)
        await self._served()
