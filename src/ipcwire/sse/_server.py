"""The HTTP side of an SSE listener: aiohttp's low-level server, in whichever loop serves.

Each ``GET <path>`` is checked (Origin, token, codec), attached to its stream (a new one, or
the one its ``Last-Event-ID`` names), and then written to by one coroutine per connection
until the stream ends, the client leaves, or a newer connection takes the stream over.

A stream has one reader. A request resuming a stream that has a connection attached takes it
over (the newest connection wins: that is how a client whose connection half-died gets its
stream back). The displaced connection gets an ``ipcwire-taken`` event, whose id is marked
(:func:`~ipcwire.sse._events.taken_id`), and is closed; ipcwire's client stops there with
``ChannelBroken``, and a client that reconnects anyway with that marked id (EventSource does)
is answered 409, which stops EventSource, instead of taking the stream back: two clients
resuming one stream id never take it from each other in a loop.

``DELETE <path>`` naming a stream (``X-Ipcwire-Stream``) is its client saying it is done with
it (ipcwire's client sends it on close()): checked as a GET is, it ends the stream at once
instead of keeping it ``resume_window`` seconds for a resume that will not come.

Response headers keep proxies out of the way: ``Cache-Control: no-cache, no-transform`` and
``X-Accel-Buffering: no`` (nginx). Keepalive comments go out every ``keepalive`` seconds
while idle, so proxies and NATs keep the connection and dead clients are noticed: each stream's
TCP socket has ``TCP_USER_TIMEOUT`` (:func:`unacked_limit`), so a comment or event its client
does not acknowledge (the client's host vanished, a silent partition) ends the connection
within seconds, not after the kernel's ~15 minutes of retransmissions. Closing the
listener ends every open stream with an ``ipcwire-end`` event and closes the connections, so
shutdown never waits on a client.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import ssl as ssl_module
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from ipcwire._core.handshake import same_secret
from ipcwire.aio._accept import accept_backoff
from ipcwire.aio._without_loop import drop_socket
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    HandshakeError,
    IpcwireError,
    PermissionDenied,
    ResourceExhausted,
)
from ipcwire.http._after_loop import drop_connections, loop_ended
from ipcwire.http._misdirected import MisdirectedLog
from ipcwire.options import ChannelOptions
from ipcwire.sse._events import (
    END_EVENT,
    KEEPALIVE,
    TAKEN_EVENT,
    event_bytes,
    parse_id,
    taken_from,
    taken_id,
)
from ipcwire.sse._streams import ServerStream, StreamTable
from ipcwire.ws._web import OriginPolicy, Page

__all__ = ["SseServer", "SseSettings", "proof"]

log = logging.getLogger("ipcwire")

CODEC_HEADER: Final = "X-Ipcwire-Codec"
MAX_FRAME_HEADER: Final = "X-Ipcwire-Max-Frame"
NONCE_HEADER: Final = "X-Ipcwire-Nonce"
PROOF_HEADER: Final = "X-Ipcwire-Proof"
STREAM_HEADER: Final = "X-Ipcwire-Stream"
# The server's keepalive interval, in seconds: a client that hears nothing (no event, no
# keepalive comment) for a few of them takes the connection as dead and reconnects.
KEEPALIVE_HEADER: Final = "X-Ipcwire-Keepalive"
ERROR_HEADER: Final = "X-Ipcwire-Error"
# On the 204 that answers a resume of a stream that ended after an error on the server (a
# client that lost the end event with its connection): the end event's "failed", quoted.
FAILED_HEADER: Final = "X-Ipcwire-Failed"
SHUTDOWN_TIMEOUT: Final = 2.0
# A connection displaced by a newer one is aborted if it has not taken its ipcwire-taken
# event and closed after this many seconds (a client that stopped reading, or a dead path).
TAKEOVER_GRACE: Final = 10.0
TAKEN_REASON: Final = (
    "another connection resumed this stream (with its Last-Event-ID) and took it over: a "
    "stream has one reader. Do not reconnect with this stream's id; connect without "
    "Last-Event-ID for a stream of your own"
)


# TCP_USER_TIMEOUT is at least this many seconds: a shorter stall of the acknowledgements
# (a retransmission or two on a busy path) is not a vanished client.
MIN_UNACKED: Final = 1.0


def unacked_limit(keepalive: float) -> float:
    """How long (seconds) what the server wrote to a stream's client may stay unacknowledged
    before the kernel drops the connection (``TCP_USER_TIMEOUT``): two keepalive intervals,
    at least :data:`MIN_UNACKED`. An idle stream writes a comment every ``keepalive``
    seconds, so a client whose host vanished is noticed within three intervals (45 s with the
    default 15; ws and grpc notice in 40 s: a ping after 20 s, unanswered for 20 s)."""
    return max(2 * keepalive, MIN_UNACKED)


def bound_unacked(transport: object, keepalive: float) -> None:
    """Set ``TCP_USER_TIMEOUT`` on the TCP socket under ``transport`` (not on a Unix socket;
    where the OS has no such option, nothing). Without it, a client that vanished without a
    FIN or RST kept its stream for about 15 minutes (tcp_retries2): the keepalive comments
    waited in the kernel's retransmission queue, every write succeeded, and the stream's
    resume window did not start."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    get = getattr(transport, "get_extra_info", None)
    sock = get("socket") if get is not None else None
    if option is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, round(unacked_limit(keepalive) * 1000))
    except OSError as exc:  # (a socket already closed: the stream ends anyway)
        log.debug("TCP_USER_TIMEOUT not set: %s", exc)


def proof(token: bytes, nonce: str) -> str:
    """The server's proof that it knows the token, for the client's nonce."""
    return hmac.new(token, b"ipcwire-sse-server\0" + nonce.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SseSettings:
    """A listener's configuration."""

    url: str
    path: str
    options: ChannelOptions
    origins: OriginPolicy
    pages: dict[str, Page]
    replay: int
    replay_bytes: int
    resume_window: float
    keepalive: float
    retry: float | None


class SseServer:
    """Serves one listener's streams; ``on_new`` gets each new stream (the accept queue),
    and ``waiting()`` says how many of them wait for ``accept()``."""

    def __init__(
        self,
        settings: SseSettings,
        on_new: Callable[[ServerStream], None],
        waiting: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.url = settings.url
        self._on_new = on_new
        self._waiting = waiting
        self._backlog = 0
        opts = settings.options
        self.table = StreamTable(
            max_events=settings.replay,
            max_bytes=settings.replay_bytes,
            send_limit=opts.max_frame,
        )
        self.closing = False
        self._web: web.Server | None = None
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._text = opts.codec.name == "json"
        retry = settings.retry
        self._retry = b"" if retry is None else f"retry: {round(retry * 1000)}\n".encode()
        # (a client that does not speak HTTP/1.1: one WARNING line, not aiohttp's traceback)
        self._misdirected = MisdirectedLog(self.url)

    async def start(
        self, sock: socket.socket, ssl: ssl_module.SSLContext | None, backlog: int
    ) -> None:
        """Serve on the bound socket, in the running loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._backlog = backlog
        # A connection must bring a whole request head within handshake_timeout of opening
        # (or of its last response), as the http mechanism's must: aiohttp's low-level server
        # otherwise keeps one that sends nothing, or trickles its headers, for its
        # keepalive_timeout (75 s here before), a descriptor each.
        self._web = web.Server(
            self._handle,
            handler_cancellation=True,
            keepalive_timeout=self.settings.options.handshake_timeout,
            logger=self._misdirected,
        )
        accept_backoff(sock, self.url)
        self._server = await self._loop.create_server(
            self._web, sock=sock, ssl=ssl, backlog=backlog
        )

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the serving loop (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._thread:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def stop_listening(self) -> None:
        """Close the listening socket (serving loop)."""
        self.closing = True
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
        """Stop listening and drop every client connection, the serving loop having ended
        (``ipcwire.http._after_loop``): the clients see the connection end at once."""
        self.stop_listening()
        drop_connections(self._web)
        self._misdirected.flush()

    @property
    def loop_stopped(self) -> bool:
        """Whether the serving loop is stopped but not closed (``run_until_complete()``
        returned, say): nothing runs in it now, and it may never run again."""
        loop = self._loop
        return loop is not None and not loop.is_closed() and not loop.is_running()

    def close_while_stopped(self) -> None:
        """Stop listening and drop every client connection while the serving loop is stopped
        (:attr:`loop_stopped`): each connection's transport is aborted, so that the loop
        forgets its socket (and its handler ends if the loop runs again), and its socket is
        shut down and closed now, so that the client sees the end at once."""
        self.stop_listening()  # (closes the listening socket at once, loop or not)
        if self._web is None:
            return
        for handler in list(self._web.connections):
            transport = handler.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                transport.abort()  # (what needs the loop waits for it: the socket goes now)
                drop_socket(sock)

    async def shutdown(self) -> None:
        """End every stream and close every connection, boundedly (serving loop)."""
        self.stop_listening()
        for stream in list(self.table.streams.values()):
            with stream.lock:
                wake = stream.end("the server is shutting down")
                attached = stream.attached
                if not attached:
                    stream.expire(f"the listener {self.url} was closed")
                stream.notify_gone()  # a recv() waiting for the end: ChannelClosed
            if wake is not None:
                wake()
        await asyncio.sleep(0)  # let the writers send their end events
        if self._web is not None:
            self._web.pre_shutdown()  # each connection closes once its response is done
            # A client that does not read holds its response's last write forever; aiohttp
            # waits SHUTDOWN_TIMEOUT for the handler, then as long again after cancelling it.
            # Abort such connections once the first wait is over: one wait in all.
            assert self._loop is not None
            stuck = self._loop.call_later(SHUTDOWN_TIMEOUT, self._abort_attached)
            try:
                await self._web.shutdown(SHUTDOWN_TIMEOUT)
            finally:
                stuck.cancel()
        for stream in list(self.table.streams.values()):
            with stream.lock:
                stream.expire(f"the listener {self.url} was closed")
        self.table.streams.clear()
        self._misdirected.flush()

    def _abort_attached(self) -> None:
        for stream in list(self.table.streams.values()):
            transport = stream.transport
            if transport is not None:
                transport.abort()

    # -- one request ------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        settings = self.settings
        path = request.path
        if path != settings.path:
            page = settings.pages.get(path)
            if page is not None and request.method in ("GET", "HEAD"):
                return web.Response(
                    body=page.body,
                    headers={"Content-Type": page.content_type, "Cache-Control": "no-cache"},
                )
            return web.Response(status=404, text=f"no event stream at {path}\n")
        if request.method not in ("GET", "DELETE"):
            return web.Response(
                status=405,
                text="an event stream is read with GET (and ended by its client with DELETE)\n",
                headers={"Allow": "GET, DELETE"},
            )
        origin = request.headers.get("Origin")
        refusal = settings.origins.refusal(origin, request.headers.get("Host"), self.url)
        if refusal is not None:
            return self._refuse(request, PermissionDenied(refusal), 403, "permission")
        error = self._check_client(request)
        if isinstance(error, HandshakeError):
            return self._refuse(request, error, 400, "codec")
        if error is not None:
            # RFC 9110, 11.6.1: a 401 says how to authenticate; RFC 6750, 3: with
            # error="invalid_token" when the token given is wrong (none if none was given).
            challenge = 'Bearer realm="ipcwire"'
            if _given_token(request) is not None:
                challenge += ', error="invalid_token"'
            return self._refuse(request, error, 401, "auth", challenge=challenge)
        if request.method == "DELETE":
            return self._release(request)
        if self.closing:
            return web.Response(status=503, text="the server is shutting down\n")
        last_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
        if last_id and (was := taken_from(last_id)) is not None:
            # A displaced connection's client reconnecting with its ipcwire-taken event's id
            # (EventSource does, unless the page closes it): refused, with a status that
            # stops EventSource, so that it does not take the stream back.
            return self._refuse(
                request,
                ChannelBroken(
                    f"the connection that had read the stream to {was[:80]!r} lost it to a "
                    f"newer connection that resumed the same stream; a stream has one "
                    f"reader. Connect without Last-Event-ID for a stream of your own"
                ),
                409,
                "taken",
            )
        peer = request.transport.get_extra_info("peername") if request.transport else None
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None
        if self._waiting() >= self._backlog and not self.table.resumes(last_id):
            return self._refuse(
                request,
                ResourceExhausted(
                    f"{self._waiting()} clients already wait for accept() (backlog="
                    f"{self._backlog}); try again later, or accept() faster on the server"
                ),
                503,
                "busy",
                retry_after=1,
            )
        limit = request.headers.get(MAX_FRAME_HEADER, "")
        if not (limit.isascii() and limit.isdigit() and len(limit) < 19):
            limit = ""  # not a number int() takes (e.g. "²", or over 4300 digits)
        opened = self.table.open(
            last_id,
            peer=peer_text,
            transport=request.transport,
            peer_limit=int(limit) if limit else None,
        )
        if opened is None:  # that stream ended: EventSource stops here
            failed = self.table.failure_of(last_id)
            headers = {FAILED_HEADER: urllib.parse.quote(failed)} if failed else None
            return web.Response(status=204, headers=headers)
        stream, gen = opened.stream, opened.generation
        if opened.displaced is not None:
            self._displaced(stream, *opened.displaced, peer_text)
        bound_unacked(request.transport, settings.keepalive)
        response = web.StreamResponse(headers=self._headers(request, stream, origin))
        try:
            await response.prepare(request)
            if opened.is_new:
                self._on_new(stream)
            await response.write(self._retry + opened.preamble)
            await self._pump(response, stream, gen, opened.position)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("%s: stream %s connection ended: %s", self.url, stream.sid, exc)
        finally:
            self._detach(stream, gen)
        return response

    def _release(self, request: web.BaseRequest) -> web.Response:
        """``DELETE`` with ``X-Ipcwire-Stream: <stream id>`` (or one of its event ids): the
        stream's client is done with it (ipcwire's client sends this on close()). The stream
        ends now: its buffer is dropped, a connection still on it is closed, its server-side
        channel's send() raises ChannelBroken; a resume of it is a resume of an unknown
        stream. 204; 404 for a stream this server does not hold. Checked as a GET is
        (Origin, token) by the caller."""
        given = request.headers.get(STREAM_HEADER, "").strip()
        if taken_from(given) is not None:  # from a connection that lost the stream
            error = "this stream was taken over by another connection, which reads it now"
            return _error_response(409, error, "taken")
        parsed = parse_id(given)
        sid = parsed[0] if parsed is not None else given
        who = request.remote or "a client"
        why = f"its client closed it ({who} asked to end it: HTTP DELETE)"
        released = self.table.release(sid, why)
        if released is None:
            what = f"no stream {sid[:80]!r} here (it ended or expired)" if sid else "no stream"
            error = f"{what}; name the stream to end in {STREAM_HEADER}: its id, or an event id"
            return _error_response(404 if sid else 400, error, "unknown" if sid else "stream")
        transport, wake = released
        if wake is not None:
            wake()
        if transport is not None:
            transport.abort()
        log.debug("%s: stream %s released by its client (%s)", self.url, sid, who)
        return web.Response(status=204)

    def _displaced(
        self, stream: ServerStream, transport: object, old_peer: str | None, peer: str | None
    ) -> None:
        """A connection (from ``peer``) took ``stream`` over from the one attached (from
        ``old_peer``): its writer sends it the taken event and ends it (see :meth:`_pump`);
        one that does not go within TAKEOVER_GRACE (a client that stopped reading, a dead
        path: its writer waits on a full socket) is aborted."""
        log.info(
            "%s: stream %s: a connection from %s resumed it while one from %s was "
            "attached; the newer one has it now (the same client back after its connection "
            "half-died, or a second client resuming the same id: the older connection is "
            "told the stream was taken over)",
            self.url,
            stream.sid,
            peer or "a client",
            old_peer or "a client",
        )
        abort = getattr(transport, "abort", None)
        if abort is not None and self._loop is not None:
            self._loop.call_later(TAKEOVER_GRACE, abort)

    def _check_client(self, request: web.BaseRequest) -> IpcwireError | None:
        opts = self.settings.options
        codec = request.headers.get(CODEC_HEADER)
        if codec is not None and codec != opts.codec.name:
            return HandshakeError(
                f"the codecs differ: the client uses codec={codec!r}, the server "
                f"codec={opts.codec.name!r}; use the same codec on both sides"
            )
        if opts.token is None:
            return None
        given = _given_token(request)
        if given is None:
            return AuthenticationFailed(
                "this event stream requires a token: send Authorization: Bearer <token> "
                "(EventSource: add ?token=<token> to the URL)"
            )
        if not same_secret(given, opts.token):
            return AuthenticationFailed("wrong token")
        return None

    def _refuse(
        self,
        request: web.BaseRequest,
        error: IpcwireError,
        status: int,
        code: str,
        *,
        retry_after: int | None = None,
        challenge: str | None = None,
    ) -> web.Response:
        peer = request.remote or "a client"
        log.warning("%s refused a client (%s): %s", self.url, peer, error)
        return _error_response(status, str(error), code, retry_after, challenge)

    def _headers(
        self, request: web.BaseRequest, stream: ServerStream, origin: str | None
    ) -> dict[str, str]:
        opts = self.settings.options
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",
            STREAM_HEADER: stream.sid,
            CODEC_HEADER: opts.codec.name,
            MAX_FRAME_HEADER: str(opts.max_frame),
            KEEPALIVE_HEADER: f"{self.settings.keepalive:g}",
        }
        if origin is not None and self.settings.origins.allowed is not None:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Vary"] = "Origin"
        nonce = request.headers.get(NONCE_HEADER)
        if opts.token is not None and nonce:
            headers[PROOF_HEADER] = proof(opts.token, nonce[:64])
        return headers

    async def _pump(
        self, response: web.StreamResponse, stream: ServerStream, gen: int, sent: int
    ) -> None:
        """Write the stream's events to this connection (which has them up to ``sent``)
        until it ends or a newer connection takes the stream over (then it gets the taken
        event, and is closed)."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        thread = threading.get_ident()

        def wake() -> None:
            if threading.get_ident() == thread:
                ready.set()
            else:
                loop.call_soon_threadsafe(ready.set)

        # Keepalives: one timer per connection, not one per wait. It fires when the
        # connection has been idle for ``keepalive`` seconds (else at that time from the last
        # write) and has the writer send a comment.
        keepalive = self.settings.keepalive
        last_write = loop.time()
        due = False
        timer: asyncio.TimerHandle

        def tick() -> None:
            nonlocal due, timer
            idle = loop.time() - last_write
            if idle >= keepalive:
                due = True
                ready.set()
                idle = 0.0
            timer = loop.call_later(keepalive - idle, tick)

        timer = loop.call_later(keepalive, tick)
        try:
            while True:
                with stream.lock:
                    if stream.broken is not None:
                        return  # gone (its client released it): the connection is aborted
                    taken = stream.generation != gen  # a newer connection took it over
                    if not taken:
                        chunk, upto = stream.pending()
                        end = stream.ended if not chunk else None
                        if not chunk and end is None and not due:
                            ready.clear()
                            stream.wait_for_events(wake)
                if taken:
                    await self._taken(response, stream, sent)
                    return
                if chunk:
                    await response.write(chunk)
                    last_write = loop.time()
                    due = False
                    sent = upto
                    with stream.lock:
                        if stream.generation == gen:
                            stream.mark_written(upto, len(chunk))
                    continue
                if end is not None:
                    said: dict[str, str] = {"reason": end}
                    if stream.failed:  # (an older client reads it as a clean end)
                        said["failed"] = stream.failed
                    body = json.dumps(said).encode()
                    await response.write(event_bytes(None, body, END_EVENT))
                    with stream.lock:
                        stream.end_written = True
                    return
                if due:
                    due = False
                    await response.write(KEEPALIVE)
                    last_write = loop.time()
                    continue
                await ready.wait()
        finally:
            timer.cancel()

    async def _taken(self, response: web.StreamResponse, stream: ServerStream, sent: int) -> None:
        """End a connection that lost its stream to a newer one: the taken event (its id
        marked, see :func:`~ipcwire.sse._events.taken_id`), then the response ends and the
        connection closes."""
        response.force_close()  # not kept alive: the client is done with this server
        body = json.dumps({"reason": TAKEN_REASON}).encode()
        await response.write(event_bytes(taken_id(stream.sid, sent), body, TAKEN_EVENT))

    def _detach(self, stream: ServerStream, gen: int) -> None:
        with stream.lock:
            detached = stream.detach(gen)
            finished = stream.end_written
            gone = stream.broken is not None
        if not detached:
            return
        if gone:
            self.table.forget(stream)
            return
        loop = asyncio.get_running_loop()
        window = self.settings.resume_window

        def expire() -> None:
            with stream.lock:
                if stream.attached or stream.generation != gen:
                    return
                stream.expire(
                    f"the client of {self.url} went away and did not come back within "
                    f"{window} s (resume_window=)"
                    if not finished
                    else f"{self.url}: the stream ended"
                )
            stream.expiry = None
            self.table.forget(stream)

        stream.expiry = loop.call_later(0 if self.closing else window, expire)


def _given_token(request: web.BaseRequest) -> str | None:
    """The token a request gives: ``Authorization: Bearer``, else ``?token=`` (EventSource
    cannot set headers); None: none."""
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else request.query.get("token")


def _error_response(
    status: int,
    error: str,
    code: str,
    retry_after: int | None = None,
    challenge: str | None = None,
) -> web.Response:
    """A refusal: the text, and ``X-Ipcwire-Error`` (JSON: the text and a code) for clients;
    ``challenge``: the ``WWW-Authenticate`` of a 401."""
    headers = {ERROR_HEADER: json.dumps({"ipcwire": 1, "error": error, "code": code})}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if challenge is not None:
        headers["WWW-Authenticate"] = challenge
    return web.Response(status=status, text=f"{error}\n", headers=headers)
