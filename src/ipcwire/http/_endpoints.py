"""What each request of ipcwire's HTTP protocol does, answered from the sessions.

:class:`Endpoints` is :class:`~ipcwire.http._server.HttpServer`'s base class: the server
owns the lifecycle and the front door (routing, the origin, token and peer checks, turning a
``Problem`` into its answer) and calls one method here per request: open a channel, send to
it, call it, poll it, stream it, close it, or answer a plain one-shot request. Each reads
the request (``_request.py``), acts on a :class:`~ipcwire.http._session.Session`, and
answers, or raises a ``Problem``; the CORS headers an answer carries are made here too (the
message stream sends its headers itself). They are apart from the server because they are
what the protocol does, and the server is how requests reach them.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from ipcwire._core.codecs import Codec
from ipcwire._core.framing import MAX_LENGTH_PREFIX
from ipcwire._core.handshake import is_our_version
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelBroken, EndOfChannel, IpcwireError
from ipcwire.http._frames import HEARTBEAT_FRAME, failure_frame, pack_batch
from ipcwire.http._protocol import (
    BATCH_TYPE,
    FAILED_HEADER,
    HEARTBEAT,
    MAX_POLL_WAIT,
    OPEN_TYPE,
    PROTOCOL_VERSION,
    REPLY_HEADER,
    UNDELIVERED_HEADER,
    Problem,
    json_bytes,
    json_object,
    peer_failed,
    proof,
    reason_from_header,
)
from ipcwire.http._request import RequestReader, asked_wait, reply_wait, seconds
from ipcwire.http._session import Session
from ipcwire.http._sessions_cap import SessionCap
from ipcwire.ws._web import OriginPolicy

__all__ = ["CHANNELS", "Endpoints", "check_open"]

CHANNELS: Final = "/channels"


def check_open(hello: dict[str, Any]) -> None:
    """Refuse an open request whose members are missing or of the wrong kind (400, naming
    the member and what it must be; docs/mechanisms/rest.md, "The channel protocol").

    Raises:
        Problem: 400 ``malformed``.
    """
    version = hello.get("ipcwire")
    if type(version) is not int:
        got = "no" if version is None else f"{msgspec.json.encode(version).decode()} as its"
        raise Problem(
            400,
            "malformed",
            f'the open request has {got} "ipcwire" member: it must be the protocol version, '
            f'the integer {PROTOCOL_VERSION}, as in {{"ipcwire": {PROTOCOL_VERSION}, "codec": '
            f'"json"}}',
        )
    if not isinstance(hello.get("codec"), str):
        raise Problem(
            400,
            "malformed",
            'the open request needs a "codec" member, a string: the codec\'s name ("json", '
            '"msgpack", "bytes" or "pickle"), the same as the server\'s',
        )
    peer_max = hello.get("max_frame")
    if "max_frame" in hello and not (type(peer_max) is int and 1 <= peer_max <= MAX_LENGTH_PREFIX):
        raise Problem(
            400,
            "malformed",
            f'the open request\'s "max_frame" must be an integer from 1 to {MAX_LENGTH_PREFIX} '
            f"(the largest message the client takes, in bytes), or left out",
        )
    nonce = hello.get("nonce")
    if "nonce" in hello and not (isinstance(nonce, str) and _is_hex(nonce)):
        raise Problem(
            400,
            "malformed",
            'the open request\'s "nonce" must be a hex string (16 random bytes, 32 hex digits), '
            "or left out",
        )


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return bool(text)


class Endpoints:
    """The endpoints of an ipcwire HTTP server, over its session table (the attributes
    below are set by :class:`~ipcwire.http._server.HttpServer`)."""

    url: str
    prefix: str
    stopping: bool
    _origins: OriginPolicy
    _codec: Codec
    _ctype: str
    _max_frame: int
    _max_batch: int
    _read: RequestReader
    _token: bytes | None
    _new_channel: Callable[[Session], Any]
    _on_channel: Callable[[Any], None]
    _reply_timeout: float
    _session_timeout: float
    _max_channels: int
    _cap: SessionCap
    _peer: Callable[[web.BaseRequest], PeerInfo]
    _sessions: dict[str, Session]
    _loop: asyncio.AbstractEventLoop | None

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
        check_open(hello)
        version = hello["ipcwire"]
        if not is_our_version(version, PROTOCOL_VERSION):
            raise Problem(
                409,
                "version",
                f"this server speaks ipcwire protocol {PROTOCOL_VERSION}, the client {version}",
            )
        if hello.get("codec") != self._codec.name:
            raise Problem(
                409,
                "codec",
                f"the server uses codec={self._codec.name!r}, the client {hello.get('codec')!r}; "
                f"use the same codec on both sides",
            )
        assert self._loop is not None
        if self.stopping:
            raise Problem(
                503,
                "shutting_down",
                "the server is shutting down; connect again once it is back",
            )
        self._cap.make_room(self._sessions, self._loop.time())  # 503 if all are busy
        if len(self._sessions) >= self._max_channels:
            raise Problem(503, "busy", f"{self._max_channels} channels are open (max_channels=)")
        send_limit = hello.get("max_frame", self._max_frame)
        sid = secrets.token_urlsafe(18)
        nonce = hello.get("nonce")
        answer = None  # the proof that this server holds the token (before any session exists)
        if self._token is not None and nonce is not None:
            answer = proof(self._token, bytes.fromhex(nonce), sid)
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
            headers={"Location": f"{self.prefix}{CHANNELS}/{sid}"},
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
                if got is None and not s.server_failure:
                    # delivered, then the channel ended (closed, or the listener shut
                    # down and stops answering): say so now, not "no reply yet" (204)
                    raise self._gone(s)
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
            elif lost:  # it gave up posting them: the end is not a clean one
                end = ChannelBroken(
                    f"the client of {self.url} closed with {lost} message(s) it could not "
                    f"deliver; they are lost. Either this side took none of its messages "
                    f"while its close() waited for room (receive faster, or have the client "
                    f"wait for replies before it closes), or its asyncio event loop ended "
                    f"with the channel open (it must be closed before: await aclose())",
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
