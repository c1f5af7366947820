"""The client side of ipcwire's HTTP protocol, without I/O.

:class:`ClientCore` says which HTTP request each channel operation makes and what each
response means; the blocking (httpx.Client) and asyncio (httpx.AsyncClient) channels only
perform the requests. Two modes:

* **channel** (default): ``connect`` opens a channel on the server (``POST /channels``);
  ``send`` posts messages, ``recv`` long-polls, ``request`` is one POST whose response is the
  server's next message, ``close`` deletes the channel.
* **plain** (``session=False``): no server state; every ``request`` is one POST to the
  prefix, so it works with any HTTP server that answers a body with a body. ``send`` posts
  and queues the reply for the next ``recv``.
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import msgspec

from ipcwire._core.codecs import BytesCodec, encode_message
from ipcwire._core.handshake import is_our_version, same_secret, version_error
from ipcwire._core.wire import checked_decode
from ipcwire.channel import ChannelStatistics
from ipcwire.channel import closed_error as channel_closed_error
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ChannelClosed,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.http._frames import batch_chunks, unpack_batch
from ipcwire.http._protocol import (
    BATCH_TYPE,
    FAILED_HEADER,
    MAX_POLL_WAIT,
    OPEN_TYPE,
    POLL_GRACE,
    PROBLEM_TYPE,
    PROTOCOL_VERSION,
    REPLY_HEADER,
    TIMEOUT_HEADER,
    UNDELIVERED_HEADER,
    content_type_for,
    error_from_response,
    failed_header,
    peer_failed,
    proof,
    token_header,
)
from ipcwire.options import ChannelOptions

__all__ = ["REPLY_HEADERS", "ClientCore", "Req"]

_CLOSE_TIMEOUT: Final = 2.0
# What a post asking for the reply adds (the server then delivers at once or not at all, as
# with ``Ipcwire-Timeout: 0``: a server whose application is not receiving must not hold the
# client's receiver), then waits for the reply.
REPLY_HEADERS: Final = {REPLY_HEADER: repr(MAX_POLL_WAIT)}
_REPLY_TIMEOUT: Final = MAX_POLL_WAIT + POLL_GRACE


@dataclass(slots=True)
class Req:
    """One HTTP request to make: ``path`` is relative to the endpoint's prefix."""

    method: str
    path: str
    headers: Mapping[str, str] | None  # on top of the client's (ClientCore.headers)
    body: bytes | list[bytes] | None = None  # a list: chunks (Content-Length is in headers)
    timeout: float | None = None  # for httpx: the whole exchange, None to wait forever
    params: Mapping[str, str] | None = None


def _grace(timeout: float | None) -> float | None:
    return None if timeout is None else timeout + POLL_GRACE


class ClientCore:
    """State and rules of one HTTP client channel (shared by both API flavours)."""

    def __init__(self, options: ChannelOptions, url: str, *, session: bool) -> None:
        self.url = url
        self.session = session
        self.codec = options.codec
        self.decode = checked_decode(options.codec, url)  # RemoteProtocolError on failure
        self.max_frame = options.max_frame
        self.send_limit = options.max_frame  # the server's, once it says
        self.max_batch = 4 * 1024 * 1024
        self.token = options.token
        ctype = content_type_for(options.codec)
        self.headers: dict[str, str] = {"Content-Type": ctype}  # on every request
        if options.token is not None:
            self.headers["Authorization"] = token_header(options.token, url)
            if not session and options.codec.name == "pickle":
                raise LocalProtocolError(
                    f"codec='pickle' needs a channel ({url}): with session=False the server "
                    f"never proves it knows the token, so its replies must not be unpickled"
                )
        # ipcwire's own raw codec: replies are the message as they are (a subclass's decode
        # must run)
        self._raw = options.codec.name == "bytes" and type(options.codec) is BytesCodec
        self.id = ""
        self.path = ""
        self.inbox: deque[bytes] = deque()  # received, not yet taken (undecoded)
        self.inbox_bytes = 0
        self.streaming = False  # the message stream is open (recv() was called)
        self.outbox: deque[bytes] = deque()  # queued by send(), posted by the sender
        self.outbox_bytes = 0
        self.ended: IpcwireError | None = None  # the server closed: recv raises after inbox
        self.broken: IpcwireError | None = None  # sends fail with this
        self.closed = False
        self.closing = False  # close() began: no more sends; what is queued still goes
        # a with block left by an exception: close() tells the server this reason
        self.failure = ""
        self.peer_tells_failure = False  # the server reads Ipcwire-Failed (it said so)
        self._nonce = secrets.token_bytes(16)
        self._urls: dict[str, httpx.URL] = {}
        self.sent = self.received = self.bytes_sent = self.bytes_received = 0
        # the channel this is the core of (weakly): its ChannelClosed says why a request()
        # closed it (ipcwire.channel.closed_because marks the channel, not this core)
        self.owner: Callable[[], object | None] = lambda: None

    def url_for(self, client: httpx.Client | httpx.AsyncClient, path: str) -> httpx.URL:
        """The absolute URL of ``path`` (relative to the prefix), made once: httpx parses
        and joins a relative URL on every request otherwise."""
        url = self._urls.get(path)
        if url is None:
            url = client.build_request("GET", path).url
            if not path and url.path != "/":
                # httpx's base URL ends with "/": the prefix itself is "/api", not "/api/"
                # (a foreign server routing exactly the prefix answers 404 to the latter)
                url = url.copy_with(path=url.path.rstrip("/"))
            self._urls[path] = url
        return url

    # -- opening -------------------------------------------------------------------------------
    def open_req(self, timeout: float) -> Req:
        hello: dict[str, Any] = {
            "ipcwire": PROTOCOL_VERSION,
            "codec": self.codec.name,
            "max_frame": self.max_frame,
            "tells_failure": True,  # this client reads the stream's failure mark
        }
        if self.token is not None:
            hello["nonce"] = self._nonce.hex()
        headers = {"Content-Type": OPEN_TYPE}
        return Req("POST", "/channels", headers, msgspec.json.encode(hello), timeout)

    def opened(self, resp: httpx.Response) -> None:
        """Take the server's answer to :meth:`open_req`.

        Raises:
            AuthenticationFailed, HandshakeError, RemoteProtocolError, ...: as mapped.
        """
        if resp.status_code != 201:
            raise self.error(resp, "connecting")
        try:
            info = msgspec.json.decode(resp.content)
            sid = info["channel"]
            if not isinstance(sid, str) or not sid:
                raise TypeError(sid)
        except Exception:
            raise RemoteProtocolError(
                f"{self.url} answered the channel request with something that is not ipcwire",
                endpoint=self.url,
            ) from None
        version = info.get("ipcwire")
        if not is_our_version(version, PROTOCOL_VERSION):
            raise version_error(self.url, info.get("ipcwire"), self.url)
        if self.token is not None:
            want = proof(self.token, self._nonce, sid)
            got = info.get("proof")
            if not same_secret(got, want):
                raise AuthenticationFailed(
                    f"{self.url} did not prove that it knows the token (it does not require "
                    f"one, or has another); refusing to talk to it",
                    endpoint=self.url,
                )
        if isinstance(info.get("max_frame"), int):
            self.send_limit = info["max_frame"]
        if isinstance(info.get("max_batch"), int):
            self.max_batch = info["max_batch"]
        self.peer_tells_failure = info.get("tells_failure") is True
        self.id = sid
        self.path = f"/channels/{sid}"

    # -- sending -------------------------------------------------------------------------------
    def check_send(self) -> None:
        if self.closed or self.closing:
            raise self.closed_error()
        self.check_broken()

    def check_broken(self) -> None:
        if self.broken is not None:
            raise self.broken

    def encode(self, obj: Any) -> bytes:
        return encode_message(self.codec, obj, self.send_limit, self.url)

    def send_req(self, payload: bytes, timeout: float | None) -> Req:
        if not self.session:
            return self.call_req(payload, timeout)
        if timeout is None:
            return Req("POST", self.path + "/messages", None, payload, None)
        headers = {TIMEOUT_HEADER: repr(timeout)}
        return Req("POST", self.path + "/messages", headers, payload, _grace(timeout))

    def unsent(self, what: str) -> str:
        """Why a send (``what``: "sent") or request ("requested") gave up waiting for room."""
        return (
            f"{self.url} is not taking messages, or the network is not carrying them (a "
            f"partition, a slow link): {self.outbox_bytes} bytes still wait to be posted; "
            f"this message was not {what}"
        )

    def queue(self, payloads: list[bytes]) -> None:
        """Hand messages to the sender (channel mode): it posts them in order, batched."""
        self.outbox.extend(payloads)
        n = sum(len(p) for p in payloads) if len(payloads) > 1 else len(payloads[0])
        self.outbox_bytes += n
        self.sent += len(payloads)
        self.bytes_sent += n

    def next_post(self, reply: bool = False) -> tuple[Req, int, int]:
        """The request posting what is queued (one message, or a batch under the server's
        limit), how many messages and bytes it carries; they stay queued until the caller
        calls :meth:`posted` with the answer (after :meth:`replied` when ``reply``: the
        request then asks for the server's next messages in its response, as
        :meth:`reply_req` does)."""
        box = self.outbox
        first = box[0]
        if len(box) == 1 or len(first) + 4 + len(box[1]) + 4 > self.max_batch:
            if reply:
                return self.reply_req(first), 1, len(first)
            return Req("POST", self.path + "/messages", None, first, None), 1, len(first)
        batch = [first]
        size = len(first) + 4
        for p in itertools.islice(box, 1, None):
            if size + len(p) + 4 > self.max_batch:
                break
            batch.append(p)
            size += len(p) + 4
        return self.batch_req(batch, reply), len(batch), size - 4 * len(batch)

    def batch_req(self, batch: list[bytes], reply: bool = False) -> Req:
        """POST ``batch`` as one body; a large message goes out as its own chunk (not copied
        into the body)."""
        chunks, size = batch_chunks(batch)
        headers = {"Content-Type": BATCH_TYPE, "Content-Length": str(size)}
        if reply:
            headers.update(REPLY_HEADERS)
        body: bytes | list[bytes] = chunks[0] if len(chunks) == 1 else chunks
        timeout = _REPLY_TIMEOUT if reply else None
        return Req("POST", self.path + "/messages", headers, body, timeout)

    def nowait_req(self, payload: bytes) -> Req:
        """Post one message that the server must deliver at once or not at all (then it
        answers as :meth:`no_room` says)."""
        return Req("POST", self.path + "/messages", {TIMEOUT_HEADER: "0"}, payload, None)

    def reply_req(self, payload: bytes) -> Req:
        """Post one message and ask for the answer in the same exchange: the server delivers
        it (at once or not at all: ``Ipcwire-Timeout: 0``), then answers with the channel's
        next messages if they come within ``MAX_POLL_WAIT`` (no stream may be open)."""
        return Req("POST", self.path + "/messages", REPLY_HEADERS, payload, _REPLY_TIMEOUT)

    def replied(self, resp: httpx.Response) -> bool:
        """Take the answer to a :meth:`reply_req` (or :meth:`next_post` with ``reply``): the
        messages it brought go to the inbox. True if the server had no room (see
        :meth:`no_room`: post it again without asking for the reply); False if the post was
        delivered, or failed (a status for :meth:`posted`). An answer over the limits or
        garbled ends the message stream with its error (FrameTooLarge, RemoteProtocolError),
        which ``recv`` raises."""
        if resp.status_code == 410:  # the server closed the channel (or shut down)
            self.stream_ended(None)
            return False
        if resp.status_code != 200:
            return self.no_room(resp)
        body = resp.content
        try:
            if resp.headers.get("content-type", "").startswith(BATCH_TYPE):
                self.arrived([bytes(v) for v in unpack_batch(body, self.max_frame, self.url)])
            elif len(body) > self.max_frame:
                raise FrameTooLarge(
                    f"{self.url} answered with {len(body)} bytes, over max_frame={self.max_frame}",
                    size=len(body),
                    limit=self.max_frame,
                    endpoint=self.url,
                )
            else:
                self.arrived([body])
        except IpcwireError as exc:
            self.stream_ended(exc)
        return False

    def no_room(self, resp: httpx.Response) -> bool:
        """Whether the server answered that its application has no room for what was posted
        (504 with a problem document; nothing was delivered): a post made with
        :meth:`reply_req` or :meth:`nowait_req` then stays queued for the sender."""
        return resp.status_code == 504 and resp.headers.get("content-type", "").startswith(
            PROBLEM_TYPE
        )

    def posted(
        self, resp: httpx.Response | None, count: int, nbytes: int, err: IpcwireError | None
    ) -> None:
        """The request made by :meth:`next_post` was answered (or failed with ``err``): its
        ``count`` messages leave the queue."""
        box = self.outbox
        for _ in range(count):
            box.popleft()
        self.outbox_bytes -= nbytes
        if err is None and resp is not None and resp.status_code >= 300:
            err = self.error(resp, "sending", sent=nbytes)
        if err is not None and self.broken is None and not self.closed:
            self.broken = (
                err
                if isinstance(err, ChannelBroken)
                else ChannelBroken(
                    f"an earlier send to {self.url} failed: {err}", endpoint=self.url
                )
            )
            self.broken.__cause__ = err

    def sent_ok(self, resp: httpx.Response, payloads: int, nbytes: int) -> None:
        """Check the answer to a send; in plain mode queue the reply for ``recv``."""
        status = resp.status_code
        if status == 204 or (self.session and status < 300):
            pass
        elif status == 200 and not self.session:
            self.arrived([resp.content])
        else:
            err = self.error(resp, "sending", sent=nbytes)
            # plain mode: no state on the server, so this send failed and the next may not
            if self.session and isinstance(err, ChannelBroken):
                self.broken = err
            raise err
        self.sent += payloads
        self.bytes_sent += nbytes

    # -- receiving -----------------------------------------------------------------------------
    def poll_req(self) -> Req:
        """A long poll for the channel's next messages (a batch), while no stream is open."""
        return Req(
            "GET",
            self.path + "/messages",
            None,
            None,
            _REPLY_TIMEOUT,
            {"wait": repr(MAX_POLL_WAIT)},
        )

    def polled(self, resp: httpx.Response) -> None:
        """Take the answer to :meth:`poll_req`: the messages it brought go to the inbox. A
        garbled batch (FrameTooLarge, RemoteProtocolError) ends the message stream with its
        error, which ``recv`` raises."""
        if resp.status_code != 200:
            return
        try:
            self.arrived([bytes(v) for v in unpack_batch(resp.content, self.max_frame, self.url)])
        except IpcwireError as exc:
            self.stream_ended(exc)

    def stream_req(self) -> Req:
        """The long response that carries every message from the server, as it comes."""
        return Req("GET", self.path + "/stream", None, None, None)

    def arrived(self, payloads: list[bytes]) -> None:
        """Messages read from the stream (the caller holds the channel's lock, if any)."""
        self.inbox.extend(payloads)
        n = sum(len(p) for p in payloads) if len(payloads) > 1 else len(payloads[0])
        self.inbox_bytes += n
        self.bytes_received += n

    def stream_ended(self, err: IpcwireError | None) -> None:
        """The stream ended: cleanly (the server closed the channel), or with ``err``."""
        if err is None:
            err = EndOfChannel(f"{self.url} closed the channel", endpoint=self.url)
        if self.ended is None:
            self.ended = err
        if self.broken is None:
            why = "the server closed the channel" if isinstance(err, EndOfChannel) else str(err)
            self.broken = ChannelBroken(f"cannot send to {self.url}: {why}", endpoint=self.url)

    def stream_failed(self, reason: bytes) -> ChannelBroken:
        """The stream ended with a failure mark: the server's channel failed."""
        return peer_failed(self.url, reason)

    def cut_off(self) -> ChannelBroken:
        """The stream ended in the middle of a message."""
        return ChannelBroken(
            f"{self.url} ended its stream in the middle of a message", endpoint=self.url
        )

    def nothing_to_receive(self) -> IpcwireError:
        return LocalProtocolError(
            f"{self.url} is a plain HTTP endpoint (session=False): the server only speaks in "
            f"reply to a request. Call request(), or send() and then recv() the reply",
            endpoint=self.url,
        )

    def take(self) -> Any:
        """The next received message, decoded.

        Raises:
            RemoteProtocolError: it does not decode (it is consumed all the same).
        """
        raw = self.inbox.popleft()
        self.inbox_bytes -= len(raw)
        self.received += 1
        return raw if self._raw else self.decode(memoryview(raw))

    def give_back(self, raws: list[bytes]) -> None:
        """Put messages taken from the inbox back at its front, in order (a batch that
        stopped at a message that does not decode: that one first, so the next receive
        raises its error; nothing after it is lost)."""
        self.inbox.extendleft(reversed(raws))
        self.inbox_bytes += sum(len(m) for m in raws)
        self.received -= len(raws)

    # -- request/reply -------------------------------------------------------------------------
    def call_req(self, payload: bytes, timeout: float | None) -> Req:
        # No deadline header: when ``timeout`` passes, the client drops the connection and
        # the server's handler is cancelled (it then keeps the message for the next poll).
        return Req("POST", self.path, None, payload, timeout)

    def called(self, resp: httpx.Response, nbytes: int) -> Any:
        """The reply in a request's answer.

        Raises:
            EndOfChannel: the server closed (or answered 204 with no reply).
            Timeout: no reply in time (504).
        """
        status = resp.status_code
        if status == 200:
            self.sent += 1
            self.bytes_sent += nbytes
            self.received += 1
            return self._decode(resp)
        if status == 204:
            self.sent += 1
            self.bytes_sent += nbytes
            raise EndOfChannel(
                f"{self.url} handled the request but sent no reply (HTTP 204)", endpoint=self.url
            )
        err = self.error(resp, "receiving", sent=nbytes)
        if not self.session:
            raise err  # no state on the server: this request failed, the next may not
        if isinstance(err, EndOfChannel):
            self.ended = err
            self.broken = ChannelBroken(f"{self.url}: the server closed the channel")
        elif isinstance(err, ChannelBroken):
            self.broken = err
        raise err

    def late_reply(self, timeout: float | None) -> Timeout:
        """A request's reply did not come in time (the channel is closed because of it)."""
        return Timeout(
            f"no reply from {self.url} within {timeout} s; the channel was closed so that a "
            f"late reply cannot answer a later request. Raise timeout= if the peer is slow",
            endpoint=self.url,
        )

    def _decode(self, resp: httpx.Response) -> Any:
        body = resp.content
        if len(body) > self.max_frame:
            raise FrameTooLarge(
                f"the reply from {self.url} is {len(body)} bytes, over max_frame={self.max_frame}",
                size=len(body),
                limit=self.max_frame,
                endpoint=self.url,
            )
        self.bytes_received += len(body)
        if self._raw:
            return body
        return self.decode(memoryview(body))

    # -- closing -------------------------------------------------------------------------------
    def close_req(self) -> Req | None:
        if not self.session or not self.id:
            return None
        # (messages close() could not post in time: the server must not end the channel
        # cleanly, as if they had never been sent)
        headers = {UNDELIVERED_HEADER: str(len(self.outbox))} if self.outbox else {}
        if self.failure and self.peer_tells_failure:
            headers[FAILED_HEADER] = failed_header(self.failure)
        return Req("DELETE", self.path, headers or None, None, _CLOSE_TIMEOUT)

    def fails_by_cutting(self) -> bool:
        """Whether close() tells a server that does not read ``Ipcwire-Failed`` (an older
        ipcwire) of a failure by cutting the channel's message stream instead of deleting the
        channel: that server's channel then ends with ChannelBroken ("the client went
        away"), not with the EndOfChannel of a clean close."""
        return (
            bool(self.failure)
            and not self.peer_tells_failure
            and self.ended is None
            and self.session
            and bool(self.id)
        )

    def error(self, resp: httpx.Response, doing: str, *, sent: int = 0) -> IpcwireError:
        return error_from_response(
            resp.status_code,
            resp.headers.get("content-type"),
            resp.content,
            self.url,
            doing=doing,
            sent=sent,
        )

    def closed_error(self) -> ChannelClosed:
        owner = self.owner()
        if owner is not None:
            return channel_closed_error(owner)  # (with why, if a request() closed it)
        return ChannelClosed(f"{self.url} is closed", endpoint=self.url)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(self.sent, self.received, self.bytes_sent, self.bytes_received, 0)
