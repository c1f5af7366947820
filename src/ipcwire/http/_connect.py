"""What both drivers' ``connect()`` and client channels share, without I/O.

The blocking driver (httpx.Client, threads) and the asyncio driver (httpx.AsyncClient, tasks)
differ in how they wait and make requests. The rest is here once: the options ``connect``
accepts and what it works out before the first request (:func:`dial`: the address, the
:class:`~ipcwire.http._client.ClientCore`, the timeout, who the peer is), the settings of the
httpx transport and client, when to try again after a refusal (:class:`Redial`), the timeouts
of the message stream and of ``close``, what a client channel answers without asking the
server (:class:`ClientEnd`: ``closed``, ``peer``, ``statistics``), and the typed error for a
failure of httpx itself (:func:`transport_error`: no connection, TLS, a broken response; an
HTTP error answer is mapped by :meth:`ClientCore.error <ipcwire.http._client.ClientCore.error>`).
"""

from __future__ import annotations

import errno
import functools
import os
import ssl
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import httpx

from ipcwire._core.url import Endpoint, parse_url
from ipcwire._oserror import UNREACHABLE, translate, unreachable
from ipcwire._stream.connect import NO_TLS_HINT, speaks_no_tls
from ipcwire._stream.retry import backoff_delays
from ipcwire._stream.transport import forked_error, watch_fork
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ConnectionRefused,
    InvalidURL,
    IpcwireError,
    Timeout,
)
from ipcwire.http._address import HttpAddress, resolve
from ipcwire.http._client import ClientCore
from ipcwire.http._protocol import HEARTBEAT
from ipcwire.http._uds import AioUnixBackend, BacklogFull, UnixBackend, use_backend
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions, reject_unknown
from ipcwire.unix._socket import explain_connect_error

__all__ = [
    "CONNECT_KW",
    "FLUSH_TIMEOUT",
    "STREAM_TIMEOUT",
    "ClientEnd",
    "Dial",
    "Redial",
    "aio_http_transport",
    "client_settings",
    "dial",
    "http_transport",
    "transport_error",
    "transport_settings",
]

CONNECT_KW: Final = ("timeout", "reconnect", "ssl", "server_hostname", "session")
# How long close() waits for what was sent before it to be posted.
FLUSH_TIMEOUT: Final = 10.0
# A silent stream is dead after three missed heartbeats.
STREAM_TIMEOUT: Final = httpx.Timeout(DEFAULT_CONNECT_TIMEOUT, read=3 * HEARTBEAT)


@dataclass(frozen=True, slots=True)
class Dial:
    """What ``connect`` knows before its first request."""

    addr: HttpAddress
    core: ClientCore
    timeout: float  # for every request of the client, unless one says otherwise
    peer: PeerInfo
    server_hostname: str | None = None  # the name the certificate must have (https)


def dial(
    endpoint: Endpoint,
    options: ChannelOptions,
    kw: dict[str, Any],
    *,
    timeout: float | None,
    session: bool,
    server_hostname: str | None = None,
) -> Dial:
    """Check ``connect``'s options and work out where and how it connects.

    Raises:
        ConfigurationError: an unknown option.
        InvalidURL: no host to connect to, or a bad socket path.
        LocalProtocolError: ``codec='pickle'`` with a token and ``session=False``.
    """
    reject_unknown(kw, endpoint, CONNECT_KW)
    addr = resolve(endpoint, listening=False)
    if addr.unix is None:
        _check_idna(addr.host, endpoint.url)
    core = ClientCore(options, addr.url(), session=session)
    limit = DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout
    peer = PeerInfo(address=str(addr.unix) if addr.unix else f"{addr.host}:{addr.port}")
    return Dial(addr, core, limit, peer, server_hostname if addr.tls else None)


def _check_idna(host: str, url: str) -> None:
    """``host`` must pass httpx's IDNA 2008 check (stricter than Python's ``idna`` codec and
    tcp's check: no emoji, no full-width letters), checked here so that connect raises
    InvalidURL instead of ``httpx.InvalidURL`` escaping from the client's construction.

    Raises:
        InvalidURL: naming the URL, the host, why, and its ASCII spelling (Python's ``idna``
        codec: ``xn--dk8h.example`` for ``🎉.example``) when it has one.
    """
    if host.isascii():
        return
    try:
        httpx.URL(scheme="http", host=host)
    except httpx.InvalidURL as exc:
        why = exc.__cause__ or exc.__context__ or exc
        try:
            ascii_form = host.encode("idna").decode("ascii")
        except UnicodeError:
            hint = "check the spelling"
        else:
            hint = f"write it in ASCII, as tcp:// and browsers look it up: {ascii_form!r}"
        raise InvalidURL(
            f"{url}: the host {host!r} is not a valid internationalised (IDNA 2008) host name "
            f"for the HTTP client ({why}); {hint}",
            endpoint=url,
        ) from None


def http_transport(d: Dial, context: ssl.SSLContext | None) -> httpx.HTTPTransport:
    """The blocking client's transport (over ``http+unix``, one that waits while the
    listener's backlog is full: ``ipcwire.http._uds``)."""
    transport = httpx.HTTPTransport(**transport_settings(d.addr, context))
    if d.addr.unix is not None:
        use_backend(transport, UnixBackend(d.core.url))
    return transport


def aio_http_transport(d: Dial, context: ssl.SSLContext | None) -> httpx.AsyncHTTPTransport:
    """The asyncio client's transport (as :func:`http_transport`)."""
    transport = httpx.AsyncHTTPTransport(**transport_settings(d.addr, context))
    if d.addr.unix is not None:
        use_backend(transport, AioUnixBackend(d.core.url))
    return transport


def transport_settings(addr: HttpAddress, context: ssl.SSLContext | None) -> dict[str, Any]:
    """The keyword arguments of httpx.HTTPTransport / AsyncHTTPTransport."""
    return {
        "uds": addr.unix.sockaddr if addr.unix is not None else None,
        "verify": context if context is not None else default_tls(),
    }


@functools.cache
def default_tls() -> ssl.SSLContext:
    """httpx's default verification (certifi's CA bundle; like the client, nothing from the
    environment), made once per process. httpx makes a new one for every transport it is not
    given one, loading the bundle each time: 20 ms here, most of an ``http://`` connect,
    though a plain connection never uses it (200 clients connecting at once took 4.6 s)."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


def client_settings(d: Dial, *, aio: bool = False) -> dict[str, Any]:
    """The keyword arguments of httpx.Client (or AsyncClient, ``aio``), besides the
    transport."""
    settings: dict[str, Any] = {
        "base_url": d.addr.base_url(),
        "timeout": d.timeout,
        "headers": d.core.headers,
        "trust_env": False,  # no proxy, .netrc or SSL_CERT_FILE from the environment
    }
    name = d.server_hostname
    if name is not None:
        # httpcore sends a request's "sni_hostname" in the TLS handshake and checks the
        # certificate against it instead of the URL's host; set on every request, as each
        # may open a connection (the sender's, the message stream's).
        def sni(request: httpx.Request) -> None:
            request.extensions["sni_hostname"] = name

        async def aio_sni(request: httpx.Request) -> None:
            sni(request)

        settings["event_hooks"] = {"request": [aio_sni if aio else sni]}
    return settings


class Redial:
    """When ``connect`` tries again after a refusal: backoff with jitter, until ``reconnect``
    seconds after the first try (never, without ``reconnect``)."""

    def __init__(self, reconnect: float | None) -> None:
        self._until = time.monotonic() + (reconnect or 0)
        self._delays: Iterator[float] = backoff_delays()

    def delay(self) -> float | None:
        """How long to wait before the next try; None: give up (raise the refusal)."""
        left = self._until - time.monotonic()
        if left <= 0:
            return None
        return min(next(self._delays), left)


class ClientEnd:
    """The part of a client channel that does not talk to the server (both drivers)."""

    def __init__(self, core: ClientCore, peer: PeerInfo) -> None:
        self.url = core.url
        self._core = core
        core.owner = weakref.ref(self)
        self._peer: PeerInfo | None = peer
        self._owner = os.getpid()
        self._forked = False  # the parent's connections, in a forked child (_after_fork)
        watch_fork(self)

    # -- across fork() (ipcwire._stream.transport.watch_fork) ---------------------------------
    def _after_fork(self) -> None:
        """In a child this process forked: the connections and the session are the
        parent's. Every send and receive refuses from now on, before anything is posted,
        read or locked."""
        self._forked = True
        self.__dict__.pop("_ipcwire_turns", None)  # request()'s turns: maybe a parent's thread's

    def _forked_error(self) -> IpcwireError:
        core = self._core
        if core.closed or core.closing:  # (closed in the child: Closed wins)
            return core.closed_error()
        return forked_error(self.url, self._owner)

    @property
    def closed(self) -> bool:
        """True once close() began (what was queued may still be on its way)."""
        return self._core.closed or self._core.closing

    def statistics(self) -> ChannelStatistics:
        return self._core.statistics()


def transport_error(exc: httpx.HTTPError, url: str, doing: str) -> IpcwireError:
    """The typed error for an httpx failure (the OSError underneath, when there is one)."""
    busy = _backlog_full(exc)
    if busy is not None:
        return busy
    if isinstance(exc, httpx.ConnectTimeout) and doing == "connecting to":
        return Timeout(
            f"{url}: timed out while {doing} it (ConnectTimeout: no answer within timeout=, the "
            f"limit of each attempt): the host is down, or the network to it drops the packets "
            f"(a partition, a firewall); check the address and the route, or pass a larger "
            f"timeout= to wait longer (reconnect= retries attempts that are refused or find no "
            f"route, not one that gets no answer: raise timeout= too)",
            endpoint=url,
        )
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(f"{url}: timed out while {doing} it ({type(exc).__name__})", endpoint=url)
    cause: BaseException | None = exc
    while cause is not None:  # the first OSError that says what happened (anyio wraps them)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return AuthenticationFailed(
                f"TLS: {url} presented a certificate this side does not trust "
                f"({cause.verify_message}); pass ssl= an SSLContext that trusts its CA, and "
                f"server_hostname= a name the certificate has if it is not the URL's host",
                endpoint=url,
            )
        if isinstance(cause, ssl.SSLError):
            hint = f": {NO_TLS_HINT.replace('without ssl=', _plain(url))}"
            return ChannelBroken(
                f"TLS with {url} failed while {doing} it: {cause}"
                + (hint if speaks_no_tls(cause) else ""),
                endpoint=url,
            )
        if isinstance(cause, OSError) and cause.errno is not None:
            if doing != "connecting to" and isinstance(
                cause, FileNotFoundError | ConnectionRefusedError
            ):
                return ConnectionRefused(
                    f"nothing listens at {url} (while {doing} it): the server stopped, "
                    f"restarted or is not running; connect again when it is up (pass "
                    f"reconnect=SECONDS to connect() to wait for it)",
                    endpoint=url,
                )
            if isinstance(cause, FileNotFoundError):
                return ConnectionRefused(
                    f"no socket at {url}: is the server running, at this exact path? Pass "
                    f"reconnect=SECONDS to wait for it",
                    endpoint=url,
                )
            if cause.errno in UNREACHABLE and doing == "connecting to":
                # (connect() retries it under reconnect=: see unreachable_cause)
                return unreachable(cause, url, reconnect=None)
            if cause.errno in (errno.EACCES, errno.EPERM):
                unix = _unix_permission(cause, url)
                if unix is not None:
                    return unix
            return translate(cause, url, doing)
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if "refused" in text.lower() or "No such file" in text:
            if doing != "connecting to":
                return ConnectionRefused(
                    f"nothing listens at {url} (while {doing} it): the server stopped, "
                    f"restarted or is not running ({text}); connect again when it is up "
                    f"(pass reconnect=SECONDS to connect() to wait for it)",
                    endpoint=url,
                )
            return ConnectionRefused(
                f"nothing is listening at {url}: start the server first ({text})", endpoint=url
            )
        return ChannelBroken(f"cannot connect to {url}: {text}", endpoint=url)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return InvalidURL(f"{url}: {exc}", endpoint=url)
    if isinstance(exc, httpx.RemoteProtocolError):
        if doing != "connecting to":
            # (a server that closes cleanly ends its channels first: 410, EndOfChannel)
            return ChannelBroken(
                f"{url} went away without closing the channel (while {doing} it): its "
                f"process was killed or died (a fatal signal, os._exit), or its connection "
                f"was cut ({exc}); this channel is over: connect again (pass "
                f"reconnect=SECONDS to connect() to wait until the server is back)",
                endpoint=url,
            )
        tls = (
            f"; or the server serves TLS: then connect to {_tls(url)} (with ssl= an "
            f"ssl.SSLContext that trusts its certificate)"
            if url.startswith("http:")
            else ""
        )
        return ChannelBroken(
            f"{url} closed the connection or broke HTTP while {doing} it: {exc}{tls}",
            endpoint=url,
        )
    return ChannelBroken(f"{url} broke while {doing} it: {exc}", endpoint=url)


def _tls(url: str) -> str:
    """``url`` as https:// (for a plain client that met a TLS server)."""
    return "https:" + url[len("http:") :] if url.startswith("http:") else url


def _plain(url: str) -> str:
    """How to reach ``url``'s server without TLS (for a TLS client that met a plain one)."""
    if url.startswith("https:"):
        return f"to http:{url[len('https:') :]} without ssl="
    return "without ssl="


def _unix_permission(exc: OSError, url: str) -> IpcwireError | None:
    """unix://'s words for a socket file this process may not connect to (its mode, owner
    and uid, and the fix: run as the owner, or listen with mode=0o660 and a shared group);
    None when ``url`` is not an ``http+unix`` path."""
    if not url.startswith("http+unix:"):
        return None
    try:
        addr = resolve(parse_url(url), listening=False)
    except IpcwireError:
        return None
    if addr.unix is None:
        return None
    return explain_connect_error(exc, addr.unix, url)


def _backlog_full(exc: BaseException) -> Timeout | None:
    """The error of ``ipcwire.http._uds`` when a Unix listener's backlog stayed full."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, BacklogFull):
            return Timeout(str(cause.error), endpoint=cause.error.endpoint)
        cause = cause.__cause__ or cause.__context__
    return None
