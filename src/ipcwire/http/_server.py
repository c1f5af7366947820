"""The HTTP server under both listeners: aiohttp's low-level server, routed by hand.

It runs on one event loop (the caller's for :mod:`ipcwire.aio`, a private thread's for the
blocking listener) and turns requests into session events (see ``_session.py``). This module
is the server's lifecycle (start, stop, the sweep of silent sessions) and its front door:
each request is checked (origin, token, peer) and routed to its endpoint; what each endpoint
does is in ``_endpoints.py`` (:class:`HttpServer`'s base class), and what a request's body
and headers hold is read and checked in ``_request.py``. Every failure is a problem document
with a status code that the ipcwire clients map back to the same typed error; the server
itself keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import weakref
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from ipcwire.aio._accept import accept_backoff
from ipcwire.aio._timeouts import within
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelBroken, ChannelClosed, IpcwireError
from ipcwire.http._after_loop import drop_connections, loop_ended
from ipcwire.http._endpoints import CHANNELS, Endpoints
from ipcwire.http._misdirected import MisdirectedLog
from ipcwire.http._openapi import openapi_document
from ipcwire.http._protocol import (
    PROBLEM_TYPE,
    Problem,
    check_bearer,
    content_type_for,
    method_not_allowed,
)
from ipcwire.http._request import RequestReader
from ipcwire.http._session import Session
from ipcwire.http._sessions_cap import SessionCap
from ipcwire.options import ChannelOptions
from ipcwire.ws._web import OriginPolicy

__all__ = ["HttpServer"]

log = logging.getLogger("ipcwire")

# A shutdown serves on for at most CLOSE_LINGER seconds, until the clients active within
# RECENT seconds have fetched what was sent to them and the end (Server._linger).
CLOSE_LINGER: Final = 1.0
RECENT: Final = 2.0


# The servers started in this process (each knows its loop), weakly.
SERVERS: weakref.WeakSet[HttpServer] = weakref.WeakSet()


class HttpServer(Endpoints):
    """Serves one ipcwire HTTP endpoint; sessions become channels via the callbacks.

    ``new_channel(session)`` builds the application's channel (it registers itself as the
    session's sink); ``on_channel(channel)`` queues it for ``accept()``.
    """

    def __init__(
        self,
        *,
        url: str,
        prefix: str,
        options: ChannelOptions,
        new_channel: Callable[[Session], Any],
        on_channel: Callable[[Any], None],
        reply_timeout: float,
        session_timeout: float,
        max_channels: int,
        max_sessions: int | None,
        peer: Callable[[web.BaseRequest], PeerInfo],
        authorize: Callable[[PeerInfo], IpcwireError | None] | None = None,
        origins: OriginPolicy | None = None,
    ) -> None:
        self.url = url
        self._origins = origins if origins is not None else OriginPolicy(None)
        self.prefix = prefix
        self._opts = options
        self._codec = options.codec
        self._ctype = content_type_for(options.codec)
        self._max_frame = options.max_frame
        self._max_batch = max(options.max_frame + 4, 4 * 1024 * 1024)
        self._read = RequestReader(
            options.codec,
            self._ctype,
            max_frame=self._max_frame,
            max_batch=self._max_batch,
            idle=options.handshake_timeout,
            url=url,
        )
        self._token = options.token
        self._new_channel = new_channel
        self._on_channel = on_channel
        self._reply_timeout = reply_timeout
        self._session_timeout = session_timeout
        self._max_channels = max_channels
        self._cap = SessionCap(url, max_sessions)
        self._peer = peer
        self._authorize = authorize
        self._sessions: dict[str, Session] = {}
        # Set by the listener's close() (any thread), first: a plain request whose channel
        # closes from then on was cut off by the shutdown, not answered "no reply".
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._web: web.Server | None = None
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # (a client that does not speak HTTP/1.1: one WARNING line, not aiohttp's traceback)
        self._misdirected = MisdirectedLog(url)
        self._openapi = openapi_document(
            title=f"ipcwire {url}",
            prefix=prefix,
            media_type=self._ctype,
            max_frame=self._max_frame,
            token=self._token is not None,
        )

    @property
    def evicted(self) -> int:
        """Client channels ended early to make room for new ones (``max_sessions``)."""
        return self._cap.evicted

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        """Serve on an already listening socket."""
        loop = self._loop = asyncio.get_running_loop()
        SERVERS.add(self)  # (an asyncio client of this loop must not wait on it: _aio_client)
        # A connection must bring a whole request head within handshake_timeout of opening
        # (or of its last response), as a WebSocket upgrade must: aiohttp's low-level server
        # otherwise keeps one that sends nothing, or trickles its headers, for an hour.
        self._web = web.Server(
            self._handle,
            handler_cancellation=True,
            access_log=None,
            keepalive_timeout=self._opts.handshake_timeout,
            logger=self._misdirected,
        )
        accept_backoff(sock, self._opts.url)
        self._server = await loop.create_server(self._web, sock=sock, ssl=ssl_context)
        self._sweeper = loop.create_task(self._sweep())

    def stop_listening(self) -> None:
        """Close the listening socket now (no new connections); existing ones still work."""
        if self._server is not None:
            self._server.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The serving loop (None before :meth:`start`)."""
        return self._loop

    @property
    def loop_ended(self) -> bool:
        """Whether the serving loop has ended (closed): :meth:`close_without_loop` then."""
        return loop_ended(self._loop)

    def close_without_loop(self) -> None:
        """Stop listening and drop every client connection, the serving loop having ended."""
        self.stop_listening()
        drop_connections(self._web)
        self._misdirected.flush()

    async def shutdown(self) -> None:
        """End every session, let their clients fetch what was sent and the end (bounded:
        :meth:`_linger`), then stop listening and close client connections (bounded).

        An orderly end for both sides: the client gets what was sent, then the end of a
        server close (its waiting requests 410, its stream ends: EndOfChannel); the
        application's channel is closed by its own listener (ChannelClosed, which serve()
        logs at debug level), not failed under it. Before, the listening socket closed at
        once and the sessions went with their unfetched messages: a client about to ask for
        its next message (a recv() just started, the reply to what it had just sent) found
        nothing listening, a reset, or 404 "no channel", as if the server had crashed, and
        lost what the server had sent last."""
        self.stopping = True  # (new channels are refused: 503 shutting_down)
        if self._sweeper is not None:
            self._sweeper.cancel()
        closed = ChannelClosed(f"the listener {self.url} was closed", endpoint=self.url)
        sessions = list(self._sessions.values())
        for s in sessions:
            s.server_close()
            if s.sink is not None:
                s.sink._end(closed)
        await self._linger(sessions)
        self.stop_listening()
        for s in sessions:
            s.client_close(closed, closed)
        self._sessions.clear()
        if self._web is not None:
            await self._web.shutdown(0.1)
        self._misdirected.flush()

    async def _linger(self, sessions: list[Session]) -> None:
        """Serve on until the client of every session that was active lately (a request
        within ``RECENT`` seconds, or one under way) has been told the end, for at most
        ``CLOSE_LINGER`` seconds. A client idle longer is not waited for: it learns the end
        at its next request only if that comes meanwhile (else it finds nothing listening)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = {
            s
            for s in sessions
            if not s.oneshot
            and not s.told
            and s.client_done is None
            and (s.in_flight > 0 or now - s.last_seen < RECENT)
        }
        if not waiting:
            return
        changed = asyncio.Event()
        for s in waiting:
            s.on_told = changed.set
        try:
            async with within(CLOSE_LINGER):
                while any(not s.told and s.client_done is None for s in waiting):
                    await changed.wait()
                    changed.clear()
        except TimeoutError:
            pass
        finally:
            for s in waiting:
                s.on_told = None

    async def _sweep(self) -> None:
        period = max(min(self._session_timeout / 4, 5.0), 0.05)
        while True:
            await asyncio.sleep(period)
            assert self._loop is not None
            limit = self._loop.time() - self._session_timeout
            for sid, s in list(self._sessions.items()):
                if s.in_flight == 0 and s.last_seen < limit:
                    log.info("%s: channel %s expired (client silent)", self.url, sid)
                    del self._sessions[sid]
                    why = ChannelBroken(
                        f"the client of {self.url} made no request for "
                        f"{self._session_timeout} s (session_timeout): it is gone",
                        endpoint=self.url,
                    )
                    s.client_close(why, why)

    # -- routing ---------------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            resp = await self._route(request)
            if not resp.prepared:  # (the message stream set them itself)
                resp.headers.update(self._cors(request))
            return resp
        except Problem as p:
            # A refused origin is news to whoever runs the server (the message says how to
            # allow it); so is a server error, but for "failed" the handler's log says it.
            if p.code == "origin" or (p.status >= 500 and p.code != "failed"):
                log.warning("%s: %s %s: %s", self.url, request.method, request.path, p)
            else:
                log.info("%s: %s %s: %s", self.url, request.method, request.path, p)
            headers = None
            if p.status == 401:
                headers = {"WWW-Authenticate": 'Bearer realm="ipcwire"'}
            elif p.status == 405:
                headers = {"Allow": str(p.extra.get("allow", ""))}
            return web.Response(
                status=p.status,
                body=p.body(),
                content_type=PROBLEM_TYPE,
                headers={**(headers or {}), **self._cors(request)},
            )

    def _check_origin(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """Refuse a page of another origin (a browser sends ``Origin``; other clients do
        not): any web page a visitor opens could otherwise POST to this endpoint through
        the visitor's browser (a form or ``fetch`` with ``text/plain`` needs no preflight).
        A page of an ``origins=`` origin gets its preflight answered here.

        Raises:
            Problem: 403, naming the origin and the ``origins=`` that allows it.
        """
        origin = request.headers.get("Origin")
        refusal = self._origins.refusal(origin, request.headers.get("Host"), self.url)
        if refusal is not None:
            raise Problem(403, "origin", refusal)
        if origin is not None and request.method == "OPTIONS":
            asked = request.headers.get("Access-Control-Request-Headers")
            return web.Response(
                status=204,
                headers={
                    **self._cors(request),
                    "Access-Control-Allow-Methods": "GET, POST, DELETE",
                    "Access-Control-Allow-Headers": asked or "Authorization, Content-Type",
                    "Access-Control-Max-Age": "600",
                },
            )
        return None

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        prefix = self.prefix
        if not path.startswith(prefix):
            raise Problem(404, "not_found", f"nothing at {path}; the endpoint is at {prefix}/")
        rest = path[len(prefix) :]
        method = request.method
        preflight = self._check_origin(request)  # (before the token: a preflight has none)
        if preflight is not None:
            return preflight
        if self._token is not None and not check_bearer(
            request.headers.get("Authorization"), self._token
        ):
            raise Problem(
                401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer <token>'"
            )
        if self._authorize is not None:
            refusal = self._authorize(self._peer(request))
            if refusal is not None:
                log.warning(
                    "%s refused a client: %s",
                    self.url,
                    getattr(refusal, "server_log", refusal),
                )
                raise Problem(403, "forbidden", str(refusal))
        if rest.startswith(CHANNELS + "/"):
            sid, _, sub = rest[len(CHANNELS) + 1 :].partition("/")
            if sub == "":
                if method == "POST":
                    return await self._call(request, sid)
                if method == "DELETE":
                    return self._close(sid, request)
                raise method_not_allowed(method, "POST, DELETE")
            if sub == "messages":
                if method == "POST":
                    return await self._send(request, sid)
                if method == "GET":
                    return await self._poll(request, sid)
                raise method_not_allowed(method, "GET, POST")
            if sub == "stream":
                if method == "GET":
                    return await self._stream(request, sid)
                raise method_not_allowed(method, "GET")
        elif rest in ("", "/"):
            if method == "POST":
                return await self._oneshot(request)
            raise method_not_allowed(method, "POST")
        elif rest == "/openapi.json":
            if method in ("GET", "HEAD"):
                return web.Response(body=self._openapi, content_type="application/json")
            raise method_not_allowed(method, "GET")
        elif rest == CHANNELS:
            if method == "POST":
                return await self._open(request)
            raise method_not_allowed(method, "POST")
        raise Problem(404, "not_found", f"nothing at {path}; see {prefix}/openapi.json")
