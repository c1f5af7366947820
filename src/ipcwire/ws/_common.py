"""What the blocking and asyncio WebSocket drivers share: addresses, admission, error mapping.

Admission (server side, no I/O) decides from the upgrade request alone whether to accept:

1. the path must be the endpoint's path (404), plain GETs get ``pages=`` (or 426);
2. ``allow_uids`` for ``ws+unix`` (403), then the ``Origin`` check (403);
3. an ipcwire client sends its handshake hello (the same sans-I/O handshake as the stream
   mechanisms, JSON in the ``X-Ipcwire-Hello`` header); the server's welcome travels back in
   the 101 response's ``X-Ipcwire-Welcome`` header. Version, codec and ``max_frame`` are
   agreed there, and a refusal is an HTTP status whose ``X-Ipcwire-Error`` header carries the
   typed reason (401 token, 403 permission, 400 codec/version). With a token, the client's
   HMAC proof is its first WebSocket message and the server answers ``{"ok": true}``: both
   sides prove the token, which never crosses the wire;
4. a plain client (a browser, websocat) with a required token sends
   ``Authorization: Bearer <token>`` or, as browsers cannot set headers, ``{"token": "..."}``
   as its first message. A wrong token closes with code 1008 (policy violation).
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from websockets.exceptions import ConnectionClosed, InvalidStatus, PayloadTooBig
from websockets.frames import CloseCode

from ipcwire._core.codecs import Codec
from ipcwire._core.handshake import ClientHandshake, ServerHandshake, Step
from ipcwire._core.url import Endpoint
from ipcwire._oserror import translate
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    HandshakeError,
    InvalidURL,
    IpcwireError,
    LocalProtocolError,
    PermissionDenied,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.options import ChannelOptions
from ipcwire.unix._socket import UnixAddress
from ipcwire.unix._socket import resolve as resolve_unix
from ipcwire.ws._web import OriginPolicy, Page, build_pages

__all__ = [
    "ERROR_HEADER",
    "HELLO_HEADER",
    "WELCOME_HEADER",
    "Admission",
    "ServerSettings",
    "WsAddress",
    "admit",
    "check_payload",
    "client_handshake",
    "closed_error",
    "finish_admission",
    "rejected_error",
    "resolve",
]

log = logging.getLogger("ipcwire")

HELLO_HEADER: Final = "X-Ipcwire-Hello"
WELCOME_HEADER: Final = "X-Ipcwire-Welcome"
ERROR_HEADER: Final = "X-Ipcwire-Error"
FRAMING: Final = "websocket"  # the framing name both handshake sides announce
DEFAULT_PING_INTERVAL: Final = 20.0
DEFAULT_PING_TIMEOUT: Final = 20.0
DEFAULT_CLOSE_TIMEOUT: Final = 3.0
_STATUS_FOR_CODE: Final = {"auth": 401, "permission": 403}


# -- addresses ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WsAddress:
    """Where a WebSocket endpoint is: TCP host and port, or a Unix socket; and its path."""

    secure: bool
    host: str
    port: int
    path: str
    unix: UnixAddress | None = None

    def uri(self) -> str:
        """The ``ws://`` URI the websockets client wants (Host header and request path)."""
        scheme = "wss" if self.secure else "ws"
        if self.unix is not None:
            return f"{scheme}://localhost{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path}"

    def listener_url(self, port: int) -> str:
        """The URL a listener reports (with the port it actually got)."""
        if self.unix is not None:
            return f"ws+unix:{'//' if self.unix.path else ''}{self.unix}"
        scheme = "wss" if self.secure else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{port}{self.path}"


def resolve(endpoint: Endpoint, *, listening: bool) -> WsAddress:
    """``ws://host:port/path``, ``wss://...``, ``ws+unix:///path.sock`` or ``ws+unix:@name``.

    Raises:
        InvalidURL: no host to connect to, no port to listen on, or a bad Unix path.
    """
    if endpoint.scheme == "ws+unix":
        return WsAddress(False, "", 0, "/", unix=resolve_unix(endpoint))
    secure = endpoint.scheme == "wss"
    host = endpoint.host
    if not host:
        if not listening:
            raise InvalidURL(
                f"{endpoint.url} has no host; write ws://127.0.0.1:8765/path", endpoint=endpoint.url
            )
        host = "127.0.0.1"
    port = endpoint.port
    if port is None:
        if listening:
            raise InvalidURL(
                f"{endpoint.url} has no port to listen on; write ws://{host}:8765"
                f"{endpoint.path or '/'} (or port 0 for any free port)",
                endpoint=endpoint.url,
            )
        port = 443 if secure else 80
    return WsAddress(secure, host, port, endpoint.path or "/")


# -- payloads -------------------------------------------------------------------------------
def check_payload(codec: Codec, obj: Any, limit: int, url: str) -> bytes | bytearray | memoryview:
    """Encode ``obj``; refuse it before anything is written if it is over ``limit``.

    Raises:
        FrameTooLarge: over the peer's limit.
        LocalProtocolError: the codec cannot encode it.
    """
    payload = codec.encode(obj)
    size = len(payload) if type(payload) is bytes else memoryview(payload).nbytes
    if size > limit:
        raise FrameTooLarge(
            f"message of {size} bytes not sent to {url}: over the limit of {limit} bytes; "
            f"raise max_frame= on both sides, or split the message",
            size=size,
            limit=limit,
            endpoint=url,
        )
    return payload


# -- server side ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServerSettings:
    """A listener's configuration, shared by its connections."""

    url: str
    path: str
    options: ChannelOptions
    origins: OriginPolicy
    pages: dict[str, Page]
    ping_interval: float | None
    ping_timeout: float | None
    close_timeout: float
    compression: str | None

    @classmethod
    def build(
        cls,
        url: str,
        path: str,
        options: ChannelOptions,
        *,
        origins: Any,
        pages: Mapping[str, str | bytes] | None,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
        compression: str | None,
    ) -> ServerSettings:
        """Validate the listener options.

        Raises:
            ConfigurationError: a bad origin, page path or compression name.
        """
        if compression not in (None, "deflate"):
            raise ConfigurationError(f"compression= for {url} is None or 'deflate'")
        return cls(
            url=url,
            path=path,
            options=options,
            origins=OriginPolicy.build(origins, url),
            pages=build_pages(pages, url),
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            compression=compression,
        )


@dataclass(slots=True)
class Admission:
    """The server's decision about one upgrade request.

    ``status`` 101 accepts; anything else is sent with ``text`` (and ``error_header``).
    ``page`` is a static page to serve instead. After a 101, ``handshake`` (ipcwire client with
    a token) or ``plain_token`` (plain client, token required) mean the first message decides.
    """

    status: int = 101
    text: str = ""
    error: IpcwireError | None = None
    error_header: str | None = None
    page: Page | None = None
    welcome: str | None = None
    handshake: ServerHandshake | None = None
    plain_token: bool = False
    send_limit: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        """Whether the first WebSocket message must be checked before the channel is ready."""
        return self.handshake is not None or self.plain_token


def _header(headers: Any, name: str) -> str | None:
    values: list[str] = headers.get_all(name)
    return values[0] if values else None


def _strip(frame: bytes) -> str:
    return frame.rstrip(b"\n").decode()


def admit(
    settings: ServerSettings,
    request_path: str,
    headers: Any,
    *,
    refusal: IpcwireError | None = None,
) -> Admission:
    """Decide about one upgrade request from its path and headers (``headers.get_all``)."""
    opts = settings.options
    path = request_path.partition("?")[0] or "/"
    upgrade = (_header(headers, "Upgrade") or "").lower() == "websocket"
    if not upgrade:
        page = settings.pages.get(path)
        if page is not None:
            return Admission(status=200, page=page)
        return Admission(
            status=426 if path == settings.path else 404,
            text=f"{settings.url} is a WebSocket endpoint: connect with a WebSocket client\n",
        )
    if path != settings.path:
        return Admission(
            status=404,
            text=f"no WebSocket endpoint at {path}; this server's endpoint is {settings.path}\n",
            error=ConnectionRefused(f"a client asked for path {path}", endpoint=settings.url),
        )
    if refusal is not None:
        return _refuse(refusal, "permission")
    why = settings.origins.refusal(
        _header(headers, "Origin"), _header(headers, "Host"), settings.url
    )
    if why is not None:
        return _refuse(PermissionDenied(why, endpoint=settings.url), "permission")
    hello = _header(headers, HELLO_HEADER)
    if hello is not None:
        return _admit_ipcwire(opts, hello)
    adm = Admission(send_limit=opts.max_frame)
    if opts.token is not None:
        auth = _header(headers, "Authorization")
        if auth is None:
            adm.plain_token = True
        elif not (
            auth[:7].lower() == "bearer "
            and hmac.compare_digest(auth[7:].strip().encode(), opts.token)
        ):
            return _refuse(AuthenticationFailed("wrong token in the Authorization header"), "auth")
    return adm


def _refuse(error: IpcwireError, code: str) -> Admission:
    status = _STATUS_FOR_CODE.get(code, 400)
    body = json.dumps({"ipcwire": 1, "error": str(error), "code": code})
    return Admission(status=status, text=f"{error}\n", error=error, error_header=body)


def _admit_ipcwire(opts: ChannelOptions, hello: str) -> Admission:
    hs = ServerHandshake(
        codec=opts.codec.name,
        framing=FRAMING,
        max_frame=opts.max_frame,
        token=opts.token,
        endpoint=opts.url,
    )
    step = hs.receive(hello.encode())
    if step.error is not None:
        return Admission(
            status=_STATUS_FOR_CODE.get(_code_of(step), 400),
            text=f"{step.error}\n",
            error=step.error,
            error_header=_strip(step.send),
        )
    return Admission(
        welcome=_strip(step.send),
        handshake=None if step.done else hs,
        send_limit=hs.peer_max_frame,
    )


def _code_of(step: Step) -> str:
    try:
        code = msgspec.json.decode(step.send).get("code", "")
    except (msgspec.DecodeError, AttributeError):
        return ""
    return str(code)


def finish_admission(
    adm: Admission, message: bytes | str, token: bytes | None
) -> tuple[bytes | None, IpcwireError | None]:
    """Check the first message of a pending admission (an ipcwire proof, or a plain client's
    ``{"token": "..."}`` compared in constant time).

    Returns what to send back (or None) and the error that refuses the client (or None).
    """
    data = message.encode() if isinstance(message, str) else message
    if adm.handshake is not None:
        step = adm.handshake.receive(data)
        adm.handshake = None
        reply = _strip(step.send).encode() if step.send else None
        return reply, step.error
    adm.plain_token = False
    try:
        msg = msgspec.json.decode(data)
    except msgspec.DecodeError:
        msg = None
    given = msg.get("token") if isinstance(msg, dict) else None
    if not isinstance(given, str):
        return None, AuthenticationFailed(
            'this endpoint requires a token: send {"token": "..."} as the first message, or '
            "an Authorization: Bearer header"
        )
    if token is not None and hmac.compare_digest(given.encode(), token):
        return None, None
    return None, AuthenticationFailed("wrong token")


def close_reason(error: IpcwireError) -> str:
    """A close-frame reason (at most 123 bytes of UTF-8)."""
    text = str(error).encode()[:120]
    return text.decode(errors="ignore")


POLICY_VIOLATION: Final = CloseCode.POLICY_VIOLATION


# -- client side ----------------------------------------------------------------------------
def client_handshake(options: ChannelOptions) -> tuple[ClientHandshake, str]:
    """The client's handshake object and the value of its hello header."""
    hs = ClientHandshake(
        codec=options.codec.name,
        framing=FRAMING,
        max_frame=options.max_frame,
        token=options.token,
        endpoint=options.url,
    )
    return hs, _strip(hs.hello())


def welcome_step(hs: ClientHandshake, welcome: str | None, url: str) -> Step:
    """Feed the server's welcome header to the client handshake.

    Raises:
        AuthenticationFailed: a token on one side only, or the server's proof is wrong.
        HandshakeError, RemoteProtocolError: version or protocol trouble.
    """
    if welcome is None:
        if hs.token is not None:
            raise AuthenticationFailed(
                f"{url} is not an ipcwire WebSocket endpoint (no {WELCOME_HEADER} header), so "
                f"it cannot prove it knows the token; send it yourself with "
                f"headers={{'Authorization': 'Bearer ...'}} and no token=",
                endpoint=url,
            )
        return Step(done=True)
    return hs.receive(welcome.encode())


def rejected_error(exc: InvalidStatus, hs: ClientHandshake, url: str) -> IpcwireError:
    """The typed error for an HTTP refusal of the upgrade."""
    response = exc.response
    status = response.status_code
    detail = _header(response.headers, ERROR_HEADER)
    if detail is not None:
        try:
            hs.receive(detail.encode())
        except IpcwireError as err:
            return err
    body = bytes(response.body).decode(errors="replace").strip()[:500]
    text = f"{url} refused the WebSocket connection (HTTP {status}): {body or 'no reason given'}"
    if status in (401, 407):
        return AuthenticationFailed(text, endpoint=url)
    if status == 403:
        return PermissionDenied(text, endpoint=url)
    if status == 404:
        return ConnectionRefused(text, endpoint=url)
    if status == 503:
        return ConnectionRefused(f"{text} (the server is shutting down)", endpoint=url)
    return HandshakeError(text, endpoint=url)


def open_error(exc: BaseException, url: str, timeout: float) -> IpcwireError:
    """The typed error for a failed opening handshake that is not an HTTP refusal."""
    if isinstance(exc, IpcwireError):
        return exc
    if isinstance(exc, TimeoutError):
        return Timeout(f"the WebSocket handshake with {url} took over {timeout} s", endpoint=url)
    if isinstance(exc, ssl.SSLError):
        return ChannelBroken(
            f"the TLS handshake with {url} failed: {exc}. If the server's certificate is "
            f"private, pass ssl=ssl.create_default_context(cafile=...) that trusts it",
            endpoint=url,
        )
    if isinstance(exc, OSError):
        return translate(exc, url, "connecting to")
    if isinstance(exc, ConnectionClosed):
        return ChannelBroken(
            f"{url} closed the connection during the handshake ({exc})", endpoint=url
        )
    return RemoteProtocolError(
        f"{url} did not complete a WebSocket handshake: {exc}; is it a WebSocket endpoint?",
        endpoint=url,
    )


# -- closing --------------------------------------------------------------------------------
def closed_error(
    exc: ConnectionClosed, url: str, *, sending: bool, max_frame: int, first_too_large: bool
) -> IpcwireError:
    """Map a closed connection onto ipcwire's errors (the caller checks "closed here" first).

    * 1000/1001/1005 from the peer: ``EndOfChannel`` (``ChannelBroken`` when sending);
    * this side refused an oversized message (1009): ``FrameTooLarge`` once, then broken;
    * the peer refused one of ours (1009), keepalive timeout (1011), a lost TCP connection
      without a closing handshake (1006), any other code: ``ChannelBroken`` saying which.
    """
    rcvd, sent = exc.rcvd, exc.sent
    cause = exc.__cause__
    if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
        if first_too_large and isinstance(cause, PayloadTooBig):
            size = cause.size if cause.size is not None else max_frame + 1
            return FrameTooLarge(
                f"a message from {url} is over the limit of {max_frame} bytes; it was not "
                f"delivered and the connection was closed with code 1009 (as RFC 6455 says). "
                f"Raise max_frame= on both sides if such messages are expected",
                size=size,
                limit=max_frame,
                endpoint=url,
            )
        return ChannelBroken(
            f"{url}: the connection was closed after an oversized message (code 1009)",
            endpoint=url,
        )
    if sending and isinstance(cause, BlockingIOError | TimeoutError):
        return Timeout(
            f"send to {url} timed out: the peer is not reading. A WebSocket cannot drop half a "
            f"message, so the connection was closed",
            endpoint=url,
        )
    if rcvd is not None and rcvd.code in (1000, 1001, 1005) and (sent is None or sent.code < 1002):
        if sending:
            return ChannelBroken(
                f"cannot send to {url}: the peer closed the connection ({rcvd})", endpoint=url
            )
        return EndOfChannel(f"{url} closed its end ({rcvd})", endpoint=url)
    if rcvd is not None and rcvd.code == CloseCode.MESSAGE_TOO_BIG:
        return ChannelBroken(
            f"{url} closed the connection because a message was over its size limit (1009); "
            f"keep messages under the peer's max_frame",
            endpoint=url,
        )
    if sent is not None and sent.code == CloseCode.INTERNAL_ERROR and "keepalive" in sent.reason:
        return ChannelBroken(
            f"{url} did not answer a keepalive ping in time: the peer is dead, frozen or "
            f"unreachable (raise ping_timeout= if it is just slow)",
            endpoint=url,
        )
    if rcvd is None and sent is None:
        if isinstance(cause, OSError):
            return translate(cause, url, "sending to" if sending else "receiving from")
        return ChannelBroken(
            f"the connection to {url} was lost without a closing handshake (code 1006): the "
            f"peer died or the network failed",
            endpoint=url,
        )
    frame = rcvd if rcvd is not None else sent
    return ChannelBroken(f"{url}: the connection was closed with {frame}", endpoint=url)


def concurrency_error(url: str) -> LocalProtocolError:
    """Two receivers on one asyncio channel."""
    return LocalProtocolError(
        f"another task is already receiving on {url}; receive from one task (and fan out with "
        f"a queue), or open one channel per task"
    )


def log_refusal(url: str, who: str, error: IpcwireError | str) -> None:
    """One log line per refused client."""
    log.warning("ipcwire: %s refused a client (%s): %s", url, who, error)
