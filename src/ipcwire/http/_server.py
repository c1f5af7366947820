"""The HTTP server under both listeners: aiohttp's low-level server, routed by hand.

It runs on one event loop (the caller's for :mod:`ipcwire.aio`, a private thread's for the
blocking listener) and turns requests into session events (see ``_session.py``); what a
request's body and headers hold is read and checked in ``_request.py``. Every failure is a
problem document with a status code that the ipcwire clients map back to the same typed
error; the server itself keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from ipcwire.aio._accept import accept_backoff
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelBroken, EndOfChannel, IpcwireError
from ipcwire.http._after_loop import drop_connections, loop_ended
from ipcwire.http._frames import HEARTBEAT_FRAME, failure_frame, pack_batch
from ipcwire.http._openapi import openapi_document
from ipcwire.http._protocol import (
    BATCH_TYPE,
    FAILED_HEADER,
    HEARTBEAT,
    MAX_POLL_WAIT,
    OPEN_TYPE,
    PROBLEM_TYPE,
    PROTOCOL_VERSION,
    REPLY_HEADER,
    UNDELIVERED_HEADER,
    Problem,
    check_bearer,
    content_type_for,
    json_bytes,
    json_object,
    method_not_allowed,
    peer_failed,
    proof,
    reason_from_header,
)
from ipcwire.http._request import RequestReader, asked_wait, reply_wait, seconds
from ipcwire.http._session import Session
from ipcwire.http._sessions_cap import SessionCap
from ipcwire.options import ChannelOptions
from ipcwire.ws._web import OriginPolicy

__all__ = ["HttpServer"]

log = logging.getLogger("ipcwire")

_CHANNELS: Final = "/channels"


class HttpServer:
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
        # A connection must bring a whole request head within handshake_timeout of opening
        # (or of its last response), as a WebSocket upgrade must: aiohttp's low-level server
        # otherwise keeps one that sends nothing, or trickles its headers, for an hour.
        self._web = web.Server(
            self._handle,
            handler_cancellation=True,
            access_log=None,
            keepalive_timeout=self._opts.handshake_timeout,
        )
        accept_backoff(sock, self._opts.url)
        self._server = await loop.create_server(self._web, sock=sock, ssl=ssl_context)
        self._sweeper = loop.create_task(self._sweep())

    def stop_listening(self) -> None:
        """Close the listening socket now (no new connections); existing ones still work."""
        if self._server is not None:
            self._server.close()

    @property
    def loop_ended(self) -> bool:
        """Whether the serving loop has ended (closed): :meth:`close_without_loop` then."""
        return loop_ended(self._loop)

    def close_without_loop(self) -> None:
        """Stop listening and drop every client connection, the serving loop having ended."""
        self.stop_listening()
        drop_connections(self._web)

    async def shutdown(self) -> None:
        """Stop listening, end every session, close client connections (bounded)."""
        self.stop_listening()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for s in list(self._sessions.values()):
            s.client_close(
                ChannelBroken(f"the listener {self.url} was closed", endpoint=self.url),
                ChannelBroken(f"the listener {self.url} was closed", endpoint=self.url),
            )
        self._sessions.clear()
        if self._web is not None:
            await self._web.shutdown(0.1)

    async def _sweep(self) -> None:
        period = max(min(self._session_timeout / 4, 5.0), 0.05)
        while True:
            await asyncio.sleep(period)
            assert self._loop is not None
            limit = self._loop.time() - self._session_timeout
            for sid, s in list(self._sessions.items()):
                if s.in_flight == 0 and s.last_seen < limit:
                    log.info("ipcwire: %s: channel %s expired (client silent)", self.url, sid)
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
                log.warning("ipcwire: %s: %s %s: %s", self.url, request.method, request.path, p)
            else:
                log.info("ipcwire: %s: %s %s: %s", self.url, request.method, request.path, p)
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

    def _cors(self, request: web.BaseRequest) -> dict[str, str]:
        """The CORS headers for a request from a page of an origin listed in ``origins=``
        (none for any other request: a foreign origin was refused before)."""
        origin = request.headers.get("Origin")
        allowed = self._origins.allowed
        if origin is None or allowed is None:
            return {}
        return {
            "Access-Control-Allow-Origin": origin if "*" not in allowed else "*",
            "Access-Control-Expose-Headers": "*",
            "Vary": "Origin",
        }

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
                raise Problem(403, "forbidden", str(refusal))
        if rest.startswith(_CHANNELS + "/"):
            sid, _, sub = rest[len(_CHANNELS) + 1 :].partition("/")
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
        elif rest == _CHANNELS:
            if method == "POST":
                return await self._open(request)
            raise method_not_allowed(method, "POST")
        raise Problem(404, "not_found", f"nothing at {path}; see {prefix}/openapi.json")

    # -- helpers ---------------------------------------------------------------------------------
    def _session(self, sid: str) -> Session:
        s = self._sessions.get(sid)
        if s is None:
            raise Problem(
                404,
                "no_channel",
                f"no channel {sid[:12]}... here: it was closed, expired (session_timeout="
                f"{self._session_timeout} s), ended for a newer client while idle longest "
                f"(max_sessions={self._cap.limit}), or the server restarted; connect again",
            )
        return s

    def _gone(self, s: Session) -> Problem:
        """The answer once the application closed the channel and all was fetched: 410, or
        500 ``failed`` naming why when it closed after an error on its side (an older
        ipcwire client, and any other, then sees a failure, not a clean end)."""
        if s.server_failure:
            return Problem(
                500,
                "failed",
                f"the server application ended the channel after an error on its side "
                f"({s.server_failure})",
                reason=s.server_failure,
            )
        return Problem(410, "gone", "the server closed this channel")

    def _reply(self, payload: bytes) -> web.Response:
        return web.Response(body=payload, content_type=self._ctype)

    # -- endpoints -------------------------------------------------------------------------------
    async def _open(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await self._read.body(request, 64 * 1024)
        try:
            hello = json_object(body)
        except ValueError as exc:
            raise Problem(
                400, "malformed", f"the open request is not a JSON object: {exc}"
            ) from None
        version = hello.get("ipcwire")
        if type(version) is not int or version != PROTOCOL_VERSION:  # not JSON's true or 1.0
            raise Problem(409, "version", f"this server speaks ipcwire protocol {PROTOCOL_VERSION}")
        if hello.get("codec") != self._codec.name:
            raise Problem(
                409,
                "codec",
                f"the server uses codec={self._codec.name!r}, the client {hello.get('codec')!r}; "
                f"use the same codec on both sides",
            )
        assert self._loop is not None
        self._cap.make_room(self._sessions, self._loop.time())  # 503 if all are busy
        if len(self._sessions) >= self._max_channels:
            raise Problem(503, "busy", f"{self._max_channels} channels are open (max_channels=)")
        peer_max = hello.get("max_frame")
        send_limit = peer_max if isinstance(peer_max, int) and peer_max > 0 else self._max_frame
        sid = secrets.token_urlsafe(18)
        nonce = hello.get("nonce")
        answer = None  # the proof that this server holds the token (before any session exists)
        if self._token is not None and isinstance(nonce, str):
            try:
                answer = proof(self._token, bytes.fromhex(nonce), sid)
            except ValueError:
                raise Problem(400, "malformed", "the nonce must be hex") from None
        s = Session(
            sid,
            oneshot=False,
            send_limit=send_limit,
            peer=self._peer(request),
            loop=self._loop,
            url=self.url,
        )
        ch = self._new_channel(s)
        self._sessions[sid] = s
        reply: dict[str, Any] = {
            "ipcwire": PROTOCOL_VERSION,
            "channel": sid,
            "max_frame": self._max_frame,
            "max_batch": self._max_batch,
            "tells_failure": True,  # this server reads Ipcwire-Failed
        }
        if answer is not None:
            reply["proof"] = answer
        s.tells_failure = hello.get("tells_failure") is True
        self._on_channel(ch)
        return web.Response(
            status=201,
            body=json_bytes(reply),
            content_type=OPEN_TYPE,
            headers={"Location": f"{self.prefix}{_CHANNELS}/{sid}"},
        )

    async def _send(self, request: web.BaseRequest, sid: str) -> web.StreamResponse:
        s = self._session(sid)
        raw = request.headers.get(REPLY_HEADER)
        reply = None if raw is None else reply_wait(raw)
        s.in_flight += 1
        try:
            items = await self._read.messages(request)
            # Asking for the reply means: deliver at once or not at all (504), unless the
            # client says how long to wait for room.
            await self._deliver(s, items, asked_wait(request, None if reply is None else 0.0))
            if reply is not None and not s.streaming:
                # The client waits for the answer: the channel's next messages, in this
                # response (no stream is open, so nothing else can take them first).
                got = await s.next_messages(many=True, max_bytes=self._max_batch, wait=reply)
                if got:
                    return self._messages_reply(got)
        finally:
            s.in_flight -= 1
            s.touch()
        return web.Response(status=204)

    def _messages_reply(self, got: list[bytes]) -> web.Response:
        """One message as itself (the codec's media type), several as a batch."""
        if len(got) == 1:
            return web.Response(body=got[0], content_type=self._ctype)
        return web.Response(body=pack_batch(got), content_type=BATCH_TYPE)

    async def _deliver(self, s: Session, items: list[tuple[Any, int]], wait: float | None) -> None:
        if s.server_done:
            raise self._gone(s)
        if not await s.deliver(items, wait):
            raise Problem(504, "timeout", "the server application is not receiving; not sent")
        if s.client_done is not None:
            raise Problem(410, "gone", str(s.client_done))

    async def _call(self, request: web.BaseRequest, sid: str) -> web.StreamResponse:
        s = self._session(sid)
        s.in_flight += 1
        try:
            wait = asked_wait(request, None)
            item = self._read.decode_one(await self._read.body(request, self._max_frame), request)
            await self._deliver(s, [item], wait)
            got = await s.next_messages(many=False, max_bytes=0, wait=wait)
        finally:
            s.in_flight -= 1
            s.touch()
        if got is None:
            raise self._gone(s)
        if not got:
            raise Problem(504, "timeout", f"no message from the server within {wait} s")
        return self._reply(got[0])

    async def _poll(self, request: web.BaseRequest, sid: str) -> web.StreamResponse:
        s = self._session(sid)
        wait = min(seconds(request.query.get("wait", "0"), "wait="), MAX_POLL_WAIT)
        s.in_flight += 1
        try:
            got = await s.next_messages(many=True, max_bytes=self._max_batch, wait=wait)
        finally:
            s.in_flight -= 1
            s.touch()
        if got is None:
            raise self._gone(s)
        if not got:
            return web.Response(status=204)
        if len(got) == 1:
            body = len(got[0]).to_bytes(4, "big") + got[0]
        else:
            body = b"".join(b for p in got for b in (len(p).to_bytes(4, "big"), p))
        return web.Response(body=body, content_type=BATCH_TYPE)

    async def _stream(self, request: web.BaseRequest, sid: str) -> web.StreamResponse:
        """Every message for the client, as it comes, on one long response."""
        s = self._session(sid)
        if s.streaming:
            raise Problem(409, "streaming", "this channel already has a message stream")
        resp = web.StreamResponse(
            headers={"Content-Type": BATCH_TYPE, "Cache-Control": "no-store", **self._cors(request)}
        )
        s.streaming = True
        s.in_flight += 1
        try:
            await resp.prepare(request)
            while True:
                got = await s.next_messages(many=True, max_bytes=self._max_batch, wait=HEARTBEAT)
                if got is None:
                    break
                if got:
                    await resp.write(pack_batch(got))
                else:
                    await resp.write(HEARTBEAT_FRAME)
            if s.server_failure and not s.client_done:
                if not s.tells_failure:
                    # A client that does not know the failure mark (an older ipcwire, any
                    # other HTTP client): a stream cut short, not the clean end of a close.
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                await resp.write(failure_frame(s.server_failure))
            await resp.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            # The client's stream broke: that client cannot receive any more.
            why = ChannelBroken(f"the client of {self.url} went away", endpoint=self.url)
            self._sessions.pop(sid, None)
            s.client_close(why, why)
            raise
        finally:
            s.streaming = False
            s.in_flight -= 1
            s.touch()
        return resp

    def _close(self, sid: str, request: web.BaseRequest) -> web.StreamResponse:
        s = self._sessions.pop(sid, None)
        if s is not None:
            undelivered = request.headers.get(UNDELIVERED_HEADER)
            failed = request.headers.get(FAILED_HEADER)
            lost = int(undelivered) if undelivered and undelivered.isdigit() else 0
            end: IpcwireError
            if failed is not None:  # its with block or serve() handler raised
                end = peer_failed(self.url, reason_from_header(failed), client=True, lost=lost)
            elif lost:  # its close() gave up posting them: the end is not a clean one
                end = ChannelBroken(
                    f"the client of {self.url} closed with {lost} message(s) it could not "
                    f"deliver: this side took none of its messages while its close() waited "
                    f"for room; they are lost. Receive faster, or have the client wait for "
                    f"replies before it closes",
                    endpoint=self.url,
                )
            else:
                end = EndOfChannel(f"the client closed {self.url}", endpoint=self.url)
            s.client_close(end)
        return web.Response(status=204)

    async def _oneshot(self, request: web.BaseRequest) -> web.StreamResponse:
        wait = asked_wait(request, self._reply_timeout)
        item = self._read.decode_one(await self._read.body(request, self._max_frame), request)
        assert self._loop is not None
        s = Session(
            "",
            oneshot=True,
            send_limit=self._max_frame,
            peer=self._peer(request),
            loop=self._loop,
            url=self.url,
        )
        ch = self._new_channel(s)
        assert s.sink is not None
        s.sink._deliver([item])
        s.sink._end(EndOfChannel(f"{self.url}: a plain HTTP request has one message"))
        self._on_channel(ch)
        try:
            got = await s.next_messages(many=False, max_bytes=0, wait=wait)
        except asyncio.CancelledError:
            s.client_close(ChannelBroken(f"the HTTP client of {self.url} went away"))
            raise
        if got:
            s.answered = True
            return self._reply(got[0])
        if got is None and s.failed:
            raise Problem(
                500,
                "server_error",
                "the server application failed while handling the request (its log says why)",
            )
        if got is None and self.stopping:
            raise Problem(
                503,
                "shutting_down",
                "the server is shutting down: the request may not have been handled; send it "
                "again once it is back",
            )
        why = "it timed out" if got is not None else "none"
        s.client_close(
            EndOfChannel(f"{self.url}: a plain HTTP request has one message"),
            ChannelBroken(
                f"the HTTP client of {self.url} stopped waiting after {wait} s", endpoint=self.url
            ),
        )
        if got is None:
            return web.Response(status=204)
        raise Problem(
            504, "timeout", f"the server application sent no reply within {wait} s ({why})"
        )
