"""Admission: the server side of a WebSocket connection's opening, without I/O.

It decides from the upgrade request alone whether to accept:

1. the path must be the endpoint's path (404), plain GETs get ``pages=`` (or 426);
2. ``allow_uids`` for ``ws+unix`` (403; refused on TCP by ``listen_address``), then the
   ``Origin`` check (403);
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

Both listeners also share, from here: ``listen()``'s checks (:func:`listen_address`), their
settings (:class:`ServerSettings`) and :class:`ListenerCore` (state, HTTP answers, the words
of each refusal). Nothing here does I/O; the drivers accept, wait and write.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Response

from ipcwire._core.codecs import DECODE_ERRORS
from ipcwire._core.handshake import ServerHandshake, Step, same_secret
from ipcwire._core.url import Endpoint
from ipcwire._exposure import warn_if_exposed
from ipcwire._stream.listener import log_text
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelClosed,
    ConfigurationError,
    ConnectionRefused,
    IpcwireError,
    PermissionDenied,
    Timeout,
)
from ipcwire.options import ChannelOptions, reject_unknown, unix_only
from ipcwire.sse._http import same_path
from ipcwire.ws._common import (
    ERROR_HEADER,
    FRAMING,
    HELLO_HEADER,
    WELCOME_HEADER,
    WsAddress,
    check_compression,
    check_timings,
    header_value,
    resolve,
    strip_frame,
)
from ipcwire.ws._web import OriginPolicy, Page, build_pages

__all__ = [
    "LISTEN_OPTIONS",
    "POLICY_VIOLATION",
    "Admission",
    "ListenerCore",
    "ServerSettings",
    "admit",
    "close_reason",
    "finish_admission",
    "listen_address",
    "log_refusal",
    "warn_if_plaintext",
]

log = logging.getLogger("ipcwire")

_STATUS_FOR_CODE: Final = {"auth": 401, "permission": 403}
LISTEN_OPTIONS: Final = (
    "ssl",
    "backlog",
    "origins",
    "pages",
    "mode",
    "allow_uids",
    "ping_interval",
    "ping_timeout",
    "close_timeout",
    "compression",
)


def listen_address(
    endpoint: Endpoint,
    kw: dict[str, Any],
    ssl: object,
    *,
    mode: int | None = None,
    allow_uids: object = None,
) -> WsAddress:
    """Where ``listen`` binds, once its options are checked (before anything is bound).

    Raises:
        ConfigurationError: an unknown option, ``wss://`` without ``ssl=``, ``ssl=`` with
            ``ws://``, or ``mode=`` or ``allow_uids=`` on TCP (``ws://``, ``wss://``: no
            socket file to give a mode, no peer credentials to check).
        InvalidURL: see :func:`ipcwire.ws._common.resolve`.
    """
    reject_unknown(kw, endpoint, LISTEN_OPTIONS)
    addr = resolve(endpoint, listening=True)
    url = endpoint.url
    if addr.unix is None:
        unix_only(url, "ws+unix", mode=mode, allow_uids=allow_uids)
    if addr.secure and ssl is None:
        raise ConfigurationError(
            f"listening at {url} needs ssl=SSLContext with a certificate "
            f"(ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); "
            f"ctx.load_cert_chain(cert, key)), or use ws://"
        )
    if ssl is not None and not addr.secure:
        raise ConfigurationError(f"ssl= is for wss:// URLs; listen at wss://... instead of {url}")
    return addr


def warn_if_plaintext(addr: WsAddress, url: str, token: bytes | None) -> None:
    """Log one warning when the listener at ``url`` takes connections from other machines
    without TLS (a plain client with a token sends it in cleartext)."""
    if addr.unix is None:
        warn_if_exposed(
            url,
            addr.host,
            token=token,
            tls=addr.secure,  # (listen_address: wss:// if and only if ssl=)
            tls_fix="ssl= (an SSLContext) with wss://",
            sent_in=(
                "from every client that sends it itself, in its Authorization header or "
                "first message (as browsers do; ipcwire's own client proves the token "
                "without sending it)"
            ),
        )


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
        addr: WsAddress,
        port: int,
        options: ChannelOptions,
        *,
        origins: Any,
        pages: Mapping[str, str | bytes] | None,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
        compression: str | None,
    ) -> ServerSettings:
        """Validate the listener options, for the listener bound at ``addr`` (on ``port``, the
        port it got). Its options carry its real URL (port 0 replaced), for error messages.

        Raises:
            ConfigurationError: a bad origin, page path or compression name, or keepalive
                or close timings that are not seconds (:func:`check_timings`).
        """
        url = addr.listener_url(port)
        check_compression(url, compression)
        ping_interval, ping_timeout, close_timeout = check_timings(
            url, ping_interval, ping_timeout, close_timeout
        )
        return cls(
            url=url,
            path=addr.path,
            options=dataclasses.replace(options, url=url),
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


def admit(
    settings: ServerSettings,
    request_path: str,
    headers: Any,
    *,
    refusal: IpcwireError | None = None,
) -> Admission:
    """Decide about one upgrade request from its path and headers (``headers.get_all``)."""
    opts = settings.options
    # compared decoded, as the listener's own path is: a client asks for /é as /%C3%A9
    path = same_path(request_path)
    upgrade = (header_value(headers, "Upgrade") or "").lower() == "websocket"
    if not upgrade:
        page = settings.pages.get(path) or settings.pages.get(request_path.partition("?")[0])
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
        header_value(headers, "Origin"), header_value(headers, "Host"), settings.url
    )
    if why is not None:
        return _refuse(PermissionDenied(why, endpoint=settings.url), "permission")
    hello = header_value(headers, HELLO_HEADER)
    if hello is not None:
        return _admit_ipcwire(opts, hello)
    adm = Admission(send_limit=opts.max_frame)
    if opts.token is not None:
        auth = header_value(headers, "Authorization")
        if auth is None:
            adm.plain_token = True
        elif not (auth[:7].lower() == "bearer " and same_secret(auth[7:].strip(), opts.token)):
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
            error_header=strip_frame(step.send),
        )
    return Admission(
        welcome=strip_frame(step.send),
        handshake=None if step.done else hs,
        send_limit=hs.peer_max_frame,
    )


def _code_of(step: Step) -> str:
    try:
        code = msgspec.json.decode(step.send).get("code", "")
    except (*DECODE_ERRORS, AttributeError):
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
        reply = strip_frame(step.send).encode() if step.send else None
        return reply, step.error
    adm.plain_token = False
    try:
        msg = msgspec.json.decode(data)
    except DECODE_ERRORS:
        msg = None
    given = msg.get("token") if isinstance(msg, dict) else None
    if not isinstance(given, str):
        return None, AuthenticationFailed(
            'this endpoint requires a token: send {"token": "..."} as the first message, or '
            "an Authorization: Bearer header"
        )
    if token is not None and same_secret(given, token):
        return None, None
    return None, AuthenticationFailed("wrong token")


def close_reason(error: IpcwireError) -> str:
    """A close-frame reason (at most 123 bytes of UTF-8)."""
    text = str(error).encode()[:120]
    return text.decode(errors="ignore")


POLICY_VIOLATION: Final = CloseCode.POLICY_VIOLATION


def log_refusal(url: str, who: str, error: IpcwireError | str) -> None:
    """One log line per refused client (with what only the log should say: the allow-list
    a refused uid is not told)."""
    log.warning("%s refused a client (%s): %s", url, who, log_text(error))


# -- a listener's state ---------------------------------------------------------------------
class ListenerCore:
    """What both WebSocket listeners keep and decide without waiting: the settings, the
    authorizer and cleanup, the "closed" flag, the HTTP answer to a request that is not
    admitted, the welcome in the 101, and the words of each refusal. The drivers add how
    they accept connections, run handshakes and wait for clients."""

    url: str

    def __init__(self, settings: ServerSettings, *, authorize: Any, on_close: Any) -> None:
        self.url = settings.url
        self._settings = settings
        self._authorize = authorize  # the socket's peer and a refusal (see ws._sockets)
        self._on_close = on_close
        self._closed = False

    def _closed_error(self) -> ChannelClosed:
        return ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)

    def _accept_timeout(self, timeout: float | None) -> Timeout:
        return Timeout(f"no client connected to {self.url} within {timeout} s", endpoint=self.url)

    def _http_answer(self, c: Any, adm: Admission, who: str) -> Response | None:
        """The HTTP response for a request that is not accepted as a WebSocket (None for a
        101): a page, or the refusal (``c.respond``, logged) with its typed reason."""
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
        response: Response = c.respond(adm.status, adm.text)
        if adm.error_header is not None:
            response.headers[ERROR_HEADER] = adm.error_header
        if adm.error is not None:
            log_refusal(self.url, who, adm.error)
        return response

    @staticmethod
    def _add_welcome(adm: Admission | None, response: Response) -> None:
        """Put the ipcwire welcome into the 101 response."""
        if adm is not None and adm.welcome and response.status_code == 101:
            response.headers[WELCOME_HEADER] = adm.welcome

    def _no_token(self, who: str) -> str:
        """Log a client that sent no first message in time; the close reason for it."""
        log_refusal(self.url, who, "no token within the handshake timeout")
        return "a token is required"

    def _refused(self, who: str, error: IpcwireError) -> str:
        """Log a client whose first message was refused; the close reason for it."""
        log_refusal(self.url, who, error)
        return close_reason(error)
