"""ipcwire's HTTP protocol, without I/O: paths, headers, content types, tokens, errors.

Everything here is shared by the server (aiohttp) and both clients (httpx sync and async);
docs/mechanisms/rest.md describes the same protocol for people and other languages. The
bodies of batches and message streams are packed and split in ``_frames.py``.

Endpoints, relative to the URL's path prefix::

    POST   {prefix}                            one request, one reply (any HTTP client)
    GET    {prefix}/openapi.json               the OpenAPI 3.1 description
    POST   {prefix}/channels                   open a channel (JSON in, JSON out: 201)
    POST   {prefix}/channels/{id}              send one message, get the channel's next one
    POST   {prefix}/channels/{id}/messages     send (one message, or a batch): 204
    GET    {prefix}/channels/{id}/messages     long-poll for the next messages (a batch)
    DELETE {prefix}/channels/{id}              close the channel (the server sees the end)

The end of a channel after an error on one side (a ``with`` block or ``serve()`` handler
left by an exception) is told apart from a clean close: both sides say ``"tells_failure":
true`` in the open exchange; a failed client's DELETE carries ``Ipcwire-Failed``; a failed
server's channel answers 500 ``failed`` where a closed one answers 410 ``gone``, and ends its
message stream with a failure mark (or, for a client that did not say it knows the mark,
cuts the stream short) instead of the clean end of the response.

Message bodies carry the codec's content type (``application/json``,
``application/msgpack``, ``application/octet-stream``...). A *batch* is
``application/x-ipcwire-frames``: each message as a 4-byte big-endian length, then its bytes
(``_frames.py``).
Errors are RFC 9457 problem documents (``application/problem+json``) with an ipcwire
``code`` member that the clients turn back into the same typed error.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from ipcwire._core.codecs import DECODE_ERRORS, Codec
from ipcwire._core.ending import failed_error
from ipcwire._core.framing import MAX_REASON, readable_reason
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    HandshakeError,
    IpcwireError,
    PermissionDenied,
    RemoteProtocolError,
    ResourceExhausted,
    Timeout,
)

__all__ = [
    "BATCH_TYPE",
    "FAILED_HEADER",
    "MAX_REASON",
    "PROBLEM_TYPE",
    "PROTOCOL_VERSION",
    "REPLY_HEADER",
    "TIMEOUT_HEADER",
    "UNDELIVERED_HEADER",
    "Problem",
    "content_type_for",
    "error_from_response",
    "failed_header",
    "media_type_matches",
    "peer_failed",
    "proof",
    "reason_from_header",
    "token_header",
]

PROTOCOL_VERSION: Final = 1
BATCH_TYPE: Final = "application/x-ipcwire-frames"
PROBLEM_TYPE: Final = "application/problem+json"
OPEN_TYPE: Final = "application/json"
TIMEOUT_HEADER: Final = "Ipcwire-Timeout"  # seconds the client waits for the reply
# On POST .../messages: "answer with the channel's next messages if they come within this
# many seconds" (200, instead of 204), when no message stream is open; the messages posted
# are then delivered at once or not at all (504) unless Ipcwire-Timeout says otherwise.
REPLY_HEADER: Final = "Ipcwire-Reply"
# On DELETE /channels/{id}: how many messages the client's send() took that it could not
# post before closing (the server's application was not taking them): the server channel
# then ends with ChannelBroken, not EndOfChannel (they are lost, and its peer must know).
UNDELIVERED_HEADER: Final = "Ipcwire-Undelivered"
# On DELETE /channels/{id}: the client's channel ended after an error on its side (a with
# block or serve() handler left by an exception): "<Type> raised while the channel was
# open", UTF-8, percent-encoded. Sent only to a server whose open answer said
# "tells_failure": true. The server channel then ends with ChannelBroken naming it.
FAILED_HEADER: Final = "Ipcwire-Failed"
MAX_POLL_WAIT: Final = 20.0  # a long poll returns after this long at most (proxies)
HEARTBEAT: Final = 15.0  # an idle message stream carries a heartbeat frame this often
POLL_GRACE: Final = 10.0  # the client waits this much longer than the server's deadline

_CONTENT_TYPES: Final = {
    "json": "application/json",
    "msgpack": "application/msgpack",
    "bytes": "application/octet-stream",
    "pickle": "application/x-python-pickle",
}
_ALIASES: Final = {
    "application/json": ("text/json",),
    "application/msgpack": ("application/x-msgpack", "application/vnd.msgpack"),
}

_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def content_type_for(codec: Codec) -> str:
    """The media type of one message encoded with ``codec``."""
    return _CONTENT_TYPES.get(codec.name, f"application/x-ipcwire-{codec.name}")


def media_type_matches(header: str | None, codec: Codec) -> bool:
    """Whether a request's Content-Type fits the server's codec.

    A missing header is accepted (the codec is documented); so is anything for the raw
    bytes codec, whose messages are opaque bytes whatever the sender calls them.
    """
    if not header or codec.name == "bytes":
        return True
    media = header.partition(";")[0].strip().lower()
    want = content_type_for(codec)
    if media == want or media in _ALIASES.get(want, ()):
        return True
    return (
        want == "application/json" and media.startswith("application/") and media.endswith("+json")
    )


def token_header(token: bytes, endpoint: str) -> str:
    """The ``Authorization`` header value for ``token``.

    Raises:
        ConfigurationError: the token is not printable ASCII (HTTP headers cannot carry it).
    """
    try:
        text = token.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if not text or not text.isprintable() or " " in text:
        raise ConfigurationError(
            f"the token for {endpoint} must be printable ASCII without spaces: HTTP sends it "
            f"as 'Authorization: Bearer <token>'",
            endpoint=endpoint,
        )
    return f"Bearer {text}"


def check_bearer(header: str | None, token: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (compared in constant time)."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("latin-1", "replace"), token)


def proof(token: bytes, nonce: bytes, channel_id: str) -> str:
    """The server's proof that it knows the token: HMAC-SHA256 over the client's nonce."""
    msg = b"ipcwire-http-server\0" + nonce + b"\0" + channel_id.encode()
    return hmac.new(token, msg, hashlib.sha256).hexdigest()


class Problem(Exception):
    """An HTTP error the server answers with (an RFC 9457 problem document)."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra

    def body(self) -> bytes:
        doc: dict[str, Any] = {
            "type": "about:blank",
            "title": _REASONS.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        doc.update(self.extra)
        return msgspec.json.encode(doc)


def parse_problem(content_type: str | None, body: bytes) -> dict[str, Any]:
    """The problem document in an error response, or ``{}`` if there is none."""
    if not content_type or "json" not in content_type:
        return {}
    try:
        doc = msgspec.json.decode(body)
    except DECODE_ERRORS:
        return {}
    return doc if isinstance(doc, dict) else {}


def error_from_response(
    status: int,
    content_type: str | None,
    body: bytes,
    endpoint: str,
    *,
    doing: str,
    sent: int = 0,
    headers: Mapping[str, str] | None = None,
) -> IpcwireError:
    """The typed error for an HTTP error response, from ipcwire or from any server.

    ``doing`` is "sending", "receiving" or "connecting": a 410 ends a receive cleanly
    (EndOfChannel) but breaks a send (ChannelBroken). ``sent`` is the request body's size.
    """
    doc = parse_problem(content_type, body)
    code = str(doc.get("code", ""))
    if code == "failed":  # the server's channel ended after an error on its side
        reason = doc.get("reason")
        raw = reason.encode("utf-8", "replace") if isinstance(reason, str) else b""
        return peer_failed(endpoint, raw)
    detail = str(doc.get("detail") or body[:200].decode("utf-8", "replace").strip())
    said = f"{endpoint} answered HTTP {status}" + (f": {detail}" if detail else "")
    if status == 410 or code == "gone":
        if doing == "receiving":
            return EndOfChannel(f"{endpoint} closed the channel ({detail})", endpoint=endpoint)
        return ChannelBroken(
            f"cannot send to {endpoint}: {detail or 'the channel is gone'}", endpoint=endpoint
        )
    if status == 401:
        hint = "" if code else "; pass token=... (the same as the server's)"
        return AuthenticationFailed(said + hint, endpoint=endpoint)
    if status == 403:
        return PermissionDenied(said, endpoint=endpoint)
    if status == 413:
        limit = doc.get("limit")
        size = doc.get("size")
        return FrameTooLarge(
            said,
            size=int(size) if isinstance(size, int) else sent,
            limit=int(limit) if isinstance(limit, int) else max(sent - 1, 0),
            endpoint=endpoint,
        )
    if status in (408, 504):
        return Timeout(said, endpoint=endpoint)
    if status in (409, 415):
        return HandshakeError(said, endpoint=endpoint)
    if status == 404 and code == "no_channel":
        return ChannelBroken(said, endpoint=endpoint)
    if status == 404:
        return RemoteProtocolError(
            f"{said}. Is {endpoint} an ipcwire HTTP endpoint, with this exact path prefix?"
            if not code
            else said,
            endpoint=endpoint,
        )
    if status == 503 and code == "shutting_down" and doing == "connecting":
        return ConnectionRefused(
            f"{said} (pass reconnect=SECONDS to connect() to wait until it is)",
            endpoint=endpoint,
        )
    if status == 429 or (status == 503 and code == "busy"):
        return ResourceExhausted(said, endpoint=endpoint)
    if status >= 500:
        return ChannelBroken(said, endpoint=endpoint)
    return RemoteProtocolError(said, endpoint=endpoint)


def peer_failed(url: str, raw: bytes, *, client: bool = False, lost: int = 0) -> ChannelBroken:
    """The end of a channel whose peer failed (``raw``: the reason it sent; untrusted, so
    bounded and shown with control characters and invalid UTF-8 as ``?``; ``lost``: how
    many of its messages its close() could not post)."""
    who = f"the client of {url}" if client else url
    then = (
        f"{lost} message(s) it had sent were lost: this side did not take them while its "
        f"close() waited for room"
        if lost
        else "every message it sent before that was delivered"
    )
    return failed_error(who, readable_reason(raw[:MAX_REASON]), url, then=then)


def failed_header(reason: str) -> str:
    """The value of ``Ipcwire-Failed`` for ``reason`` (percent-encoded UTF-8: any bytes fit
    in a header)."""
    return urllib.parse.quote(reason.encode("utf-8", "replace")[:MAX_REASON], safe=" ")


def reason_from_header(value: str) -> bytes:
    """The reason in an ``Ipcwire-Failed`` header (at most ``MAX_REASON`` bytes)."""
    raw = value[: 3 * MAX_REASON].encode("utf-8", "surrogateescape")
    return urllib.parse.unquote_to_bytes(raw)[:MAX_REASON]


def method_not_allowed(method: str, allowed: str) -> Problem:
    """The 405 answer (with the methods that are allowed)."""
    return Problem(405, "method", f"{method} is not allowed here; use {allowed}", allow=allowed)


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object from a request body.

    Raises:
        ValueError: not JSON, or not an object.
    """
    try:
        obj = msgspec.json.decode(body)
    except DECODE_ERRORS as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    return obj


def json_bytes(obj: dict[str, Any]) -> bytes:
    """``obj`` as JSON."""
    return msgspec.json.encode(obj)
