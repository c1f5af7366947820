"""What the blocking and asyncio WebSocket drivers share: addresses, the client side of the
handshake, how closed connections map onto ipcwire's errors, and :class:`ChannelCore` (a
channel's state, counters and error decisions; the drivers add how they send and wait).
``_admission`` has the server side."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from websockets import exceptions as ws_exceptions
from websockets.exceptions import ConnectionClosed, InvalidStatus, PayloadTooBig
from websockets.frames import CloseCode

from ipcwire._core.codecs import Codec, unsendable
from ipcwire._core.ending import error_reason, failed_error
from ipcwire._core.handshake import ClientHandshake, Step
from ipcwire._core.url import Endpoint
from ipcwire._core.wire import checked_decode
from ipcwire._deadline import NO_LIMIT
from ipcwire._oserror import translate
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.channel import closed_error as channel_closed_error
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ChannelClosed,
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
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.sse._http import request_path, shown_path
from ipcwire.tcp._socket import resolve as check_host  # (its host name check)
from ipcwire.unix._socket import UnixAddress
from ipcwire.unix._socket import resolve as resolve_unix
from ipcwire.ws._not_ws import not_websocket

# the library refuses a message in more fragments than it takes (code 1009), where it can
_TooManyFragments: Final[Any] = getattr(ws_exceptions, "TooManyFragments", None)

__all__ = [
    "CONNECT_OPTIONS",
    "ERROR_HEADER",
    "HELLO_HEADER",
    "RECV_QUEUE_HIGH",
    "RECV_QUEUE_LOW",
    "WELCOME_HEADER",
    "ChannelCore",
    "WsAddress",
    "check_compression",
    "check_headers",
    "check_payload",
    "check_timings",
    "client_handshake",
    "close_reason",
    "closed_error",
    "concurrency_error",
    "connect_address",
    "header_value",
    "open_error",
    "rejected_error",
    "resolve",
    "strip_frame",
    "token_timeout",
    "welcome_step",
]

HELLO_HEADER: Final = "X-Ipcwire-Hello"
WELCOME_HEADER: Final = "X-Ipcwire-Welcome"
ERROR_HEADER: Final = "X-Ipcwire-Error"
FRAMING: Final = "websocket"  # the framing name both handshake sides announce
DEFAULT_PING_INTERVAL: Final = 20.0
DEFAULT_PING_TIMEOUT: Final = 20.0
DEFAULT_CLOSE_TIMEOUT: Final = 3.0
# The receive queue of a connection (both drivers, both sides, ``ipcwire.ws._fast``): reading
# pauses once the frames waiting for recv() hold over RECV_QUEUE_HIGH bytes (or number over
# the library's max_queue, 16), and resumes once they hold at most RECV_QUEUE_LOW bytes (and
# 4 frames). A frame is queued whatever its size (up to max_frame), so a large message, or a
# message in many fragments, still gets through: a connection holds about RECV_QUEUE_HIGH,
# one message and what the parser has read of the next, whatever a peer sends.
RECV_QUEUE_HIGH: Final = 4 * 1024 * 1024
RECV_QUEUE_LOW: Final = RECV_QUEUE_HIGH // 4
CONNECT_OPTIONS: Final = (
    "timeout",
    "reconnect",
    "ssl",
    "server_hostname",
    "origin",
    "headers",
    "ping_interval",
    "ping_timeout",
    "close_timeout",
    "compression",
)


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
        """The ``ws://`` URI the websockets client wants (Host header and request path).

        The path is percent-encoded here (``/é`` as ``/%C3%A9``, ``/a b`` as ``/a%20b``, a
        decoded ``?`` or ``#`` as ``%3F``, ``%23``): websockets sends an ASCII path as it is,
        and a raw space, ``?`` or ``#`` would not be the path the listener has.
        """
        scheme = "wss" if self.secure else "ws"
        path = request_path(self.path)
        if self.unix is not None:
            return f"{scheme}://localhost{path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{path}"

    def listener_url(self, port: int) -> str:
        """The URL a listener reports (with the port it actually got)."""
        if self.unix is not None:
            return f"ws+unix:{'//' if self.unix.path else ''}{self.unix}"
        scheme = "wss" if self.secure else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{port}{shown_path(self.path)}"


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
    check_host(replace(endpoint, host=host, port=port), listening=True)
    return WsAddress(secure, host, port, endpoint.path or "/")


def check_timings(
    url: str, ping_interval: object, ping_timeout: object, close_timeout: object
) -> tuple[float | None, float | None, float]:
    """``ping_interval=``, ``ping_timeout=`` (seconds over 0, or None: no keepalive) and
    ``close_timeout=`` (seconds, 0 or more) checked; over ``NO_LIMIT`` is ``NO_LIMIT``.
    Unchecked, ``ping_interval=0`` sent pings back to back (a CPU spent on pings for the
    channel's life), a string or NaN ended the keepalive thread with a traceback, and
    ``close_timeout=None`` raised a bare TypeError at connect.

    Raises:
        ConfigurationError: naming the option, its value, the endpoint and what it takes.
    """
    interval = None if ping_interval is None else _seconds("ping_interval", ping_interval, url)
    timeout = None if ping_timeout is None else _seconds("ping_timeout", ping_timeout, url)
    return interval, timeout, _seconds("close_timeout", close_timeout, url)


def check_compression(url: str, compression: object) -> None:
    """``compression=`` is None or ``"deflate"`` (on a client, another name was refused by
    the library as if the server had failed: "did not complete a WebSocket handshake:
    unsupported compression: gzip; is it a WebSocket endpoint?").

    Raises:
        ConfigurationError: any other value.
    """
    if compression not in (None, "deflate"):
        raise ConfigurationError(
            f"compression= for {url} is None or 'deflate', not {compression!r}", endpoint=url
        )


_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110)


def check_headers(url: str, origin: object, headers: object) -> None:
    """``origin=`` and ``headers=`` of a client: a str, and a mapping of header names (HTTP
    tokens) to str values without CR, LF or NUL. Unchecked, a CR/LF in one was refused by the
    library mid-handshake and reported as the server's fault ("is it a WebSocket
    endpoint?"), and ``headers=5`` was a bare TypeError.

    Raises:
        ConfigurationError: naming the header, the endpoint and what a header may hold.
    """
    if headers is not None and not isinstance(headers, Mapping):
        raise ConfigurationError(
            f"headers={headers!r} for {url}: give a mapping of header names to values, such "
            f"as {{'X-Agent': 'planner'}}",
            endpoint=url,
        )
    given = [("origin", origin)] if origin is not None else []
    for name, value in [*given, *(headers or {}).items()]:
        if (
            not isinstance(name, str)
            or not _TOKEN.fullmatch(name)
            or not isinstance(value, str)
            or any(c in value for c in "\r\n\0")
        ):
            raise ConfigurationError(
                f"header {name!r}: {value!r} for {url}: a header name is letters, digits and "
                f"!#$%&'*+.^_`|~- ; a value is text without CR, LF or NUL",
                endpoint=url,
            )


def _seconds(name: str, value: object, url: str) -> float:
    closing = name == "close_timeout"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 or (closing and value == 0))  # (NaN too)
    ):
        what = "0 or more" if closing else "over 0 (None: no keepalive)"
        default = {
            "ping_interval": DEFAULT_PING_INTERVAL,
            "ping_timeout": DEFAULT_PING_TIMEOUT,
        }.get(name, DEFAULT_CLOSE_TIMEOUT)
        raise ConfigurationError(
            f"{name}={value!r} for {url}: give a number of seconds, {what}; the default is "
            f"{default:g}",
            endpoint=url,
        )
    return min(float(value), NO_LIMIT)


# -- payloads -------------------------------------------------------------------------------
def check_payload(codec: Codec, obj: Any, limit: int, url: str) -> bytes | bytearray | memoryview:
    """Encode ``obj``; refuse it before anything is written if it is over ``limit``.

    Raises:
        FrameTooLarge: over the peer's limit.
        LocalProtocolError: the codec cannot encode it.
    """
    try:
        payload = codec.encode(obj)
    except LocalProtocolError as exc:
        raise unsendable(exc, url) from exc.__cause__
    if type(payload) is bytes:
        size = len(payload)
    else:
        # a view of bytes, whatever its format: websockets counts len(), which is items
        payload = memoryview(payload).cast("B")
        size = payload.nbytes
    if size > limit:
        raise FrameTooLarge(
            f"message of {size} bytes not sent to {url}: over the limit of {limit} bytes; "
            f"raise max_frame= on both sides, or split the message",
            size=size,
            limit=limit,
            endpoint=url,
        )
    return payload


def header_value(headers: Any, name: str) -> str | None:
    """The first value of a header (``headers.get_all`` of websockets' Headers)."""
    values: list[str] = headers.get_all(name)
    return values[0] if values else None


def strip_frame(frame: bytes) -> str:
    """A handshake frame (JSON and a newline) as header or message text."""
    return frame.rstrip(b"\n").decode()


# -- client side ----------------------------------------------------------------------------
def connect_address(endpoint: Endpoint, kw: dict[str, Any], ssl: object) -> WsAddress:
    """Where ``connect`` goes, once its options are checked.

    Raises:
        ConfigurationError: an unknown option, or ``ssl=`` with a ``ws://`` URL.
        InvalidURL: see :func:`resolve`.
    """
    reject_unknown(kw, endpoint, CONNECT_OPTIONS)
    addr = resolve(endpoint, listening=False)
    if ssl is not None and not addr.secure:
        raise ConfigurationError(f"ssl= is for wss:// URLs, not {endpoint.url}")
    return addr


def client_handshake(
    options: ChannelOptions, headers: Mapping[str, str] | None
) -> tuple[ClientHandshake, dict[str, str]]:
    """The client's handshake object and the upgrade request's extra headers: its hello, then
    the caller's ``headers=``."""
    hs = ClientHandshake(
        codec=options.codec.name,
        framing=FRAMING,
        max_frame=options.max_frame,
        token=options.token,
        endpoint=options.url,
    )
    extra: dict[str, str] = {HELLO_HEADER: strip_frame(hs.hello())}
    extra.update(headers or {})
    return hs, extra


def welcome_step(hs: ClientHandshake, response: Any, url: str) -> Step:
    """Feed the welcome header of the server's 101 response (websockets' ``Response``, or
    None) to the client handshake. After the last step ``hs.peer_max_frame`` is the send
    limit (this side's ``max_frame`` when the server sent no welcome).

    Raises:
        AuthenticationFailed: a token on one side only, or the server's proof is wrong.
        HandshakeError, RemoteProtocolError: version or protocol trouble.
    """
    welcome = None if response is None else header_value(response.headers, WELCOME_HEADER)
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


def token_timeout(url: str) -> Timeout:
    """The server did not answer the token proof before the connect deadline."""
    return Timeout(f"{url} did not finish the token handshake in time", endpoint=url)


def rejected_error(exc: InvalidStatus, hs: ClientHandshake, url: str) -> IpcwireError:
    """The typed error for an HTTP refusal of the upgrade."""
    response = exc.response
    status = response.status_code
    other = not_websocket(status, response.headers, url)  # (not a WebSocket server's answer)
    if other is not None:
        return other
    detail = header_value(response.headers, ERROR_HEADER)
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
        return Timeout(
            f"the WebSocket handshake with {url} took over {timeout:.3g} s", endpoint=url
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        # the server did not prove who it is: as for tcp+TLS and https (docs/errors.md)
        return AuthenticationFailed(
            f"the TLS handshake with {url} failed: the server's certificate is not trusted "
            f"({exc.verify_message or exc}). If it is private, pass "
            f"ssl=ssl.create_default_context(cafile=...) that trusts it, and a "
            f"server_hostname= that the certificate names",
            endpoint=url,
        )
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
def close_reason(exc: BaseException | None) -> str:
    """The reason of the close frame after a ``with`` block or handler that ``exc`` ended
    ("": a normal close, 1000), within the 123 bytes a close frame has room for."""
    return error_reason(exc).encode()[:123].decode("utf-8", "ignore")


# the close codes of a clean end (1005: a close frame without a code)
_CLEAN: Final = frozenset(
    {CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD}
)


def closed_error(
    exc: ConnectionClosed, url: str, *, sending: bool, max_frame: int, first_too_large: bool
) -> IpcwireError:
    """Map a closed connection onto ipcwire's errors (the caller checks "closed here" first).

    * 1000/1001/1005 from the peer: ``EndOfChannel`` (``ChannelBroken`` when sending);
    * this side refused an oversized message (1009): ``FrameTooLarge`` once, then broken;
    * the peer refused one of ours (1009), keepalive timeout (1011), the peer's ``with``
      block or handler left by an exception (1011 naming its type), a lost TCP connection
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
        if _TooManyFragments is not None and isinstance(cause, _TooManyFragments):
            return ChannelBroken(
                f"a message from {url} came in too many fragments ({cause}); it was not "
                f"delivered and the connection was closed with code 1009. Have the peer send "
                f"each message in fewer frames",
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
    # (1005 both ways: the peer's close frame had no code, as a browser's ws.close() sends
    # it, and the library's answer echoes it; before, that clean end was ChannelBroken)
    if rcvd is not None and rcvd.code in _CLEAN and (sent is None or sent.code in _CLEAN):
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
    if rcvd is not None and rcvd.code == CloseCode.INTERNAL_ERROR and rcvd.reason:
        return failed_error(url, f"{rcvd.reason}; code 1011", url)
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


# -- a channel's state ----------------------------------------------------------------------
class ChannelCore:
    """What both WebSocket channels keep and decide without waiting: the connection, codec
    and limits, the counters, the "closed here" flag, and the typed error for each way a
    call ends badly. The drivers add ``send``/``recv``/``close`` with their I/O; their
    per-message paths read these attributes directly (no call per message)."""

    url: str
    _conn: Any  # the library's connection (sync or asyncio); the drivers narrow it

    def __init__(
        self,
        conn: Any,
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
        self._decode = checked_decode(codec, url)  # RemoteProtocolError, whatever the codec
        self._text = codec.name == "json"  # JSON in text frames, as browsers expect
        self._max_frame = max_frame
        self._send_limit = send_limit
        self._peer = peer
        self._closed = False
        self._close_reason = ""  # a with block left by an exception: close with 1011 and it
        # The error of a message that did not decode in a recv_many batch after others: the
        # next receive raises it, in that message's place.
        self._deferred: IpcwireError | None = None
        self._too_large_reported = False
        self._sent = 0
        self._received = 0
        self._bytes_sent = 0
        self._bytes_received = 0

    def _closed_error(self) -> ChannelClosed:
        return channel_closed_error(self)  # (and why, when a request() closed it)

    def _recv_timeout(self, timeout: float | None) -> Timeout:
        waited = "yet" if timeout == 0 else f"within {timeout} s"  # (as unix:// and tcp:// say)
        return Timeout(f"no message from {self.url} {waited}", endpoint=self.url)

    def _error(self, exc: ConnectionClosed, *, sending: bool) -> IpcwireError:
        """The error for a call that found the connection closed (see :func:`closed_error`);
        ``ChannelClosed`` when this side closed it."""
        if self._closed:
            return self._closed_error()
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

    @property
    def latency(self) -> float:
        """Round-trip time measured by the last keepalive ping, in seconds (0 before one)."""
        latency: float = self._conn.latency
        return latency

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
        )
