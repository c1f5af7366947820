"""The blocking connect loop shared by stream-socket mechanisms: retries, handshake, channel."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import Final

from ipcwire._oserror import UNREACHABLE, no_answer, translate, unreachable
from ipcwire._stream.blocking import StreamChannel
from ipcwire._stream.handshake import client_handshake
from ipcwire._stream.retry import backoff_delays
from ipcwire._stream.transport import ByteStream, SocketStream, TlsStream
from ipcwire.channel import PeerInfo
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ConnectionRefused,
    IpcwireError,
)
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "NO_TLS_HINT",
    "PLAIN_HINT",
    "connect_error",
    "connect_stream",
    "retried",
    "speaks_no_tls",
    "tls_error",
]


# OpenSSL's words when what answered a TLS client does not speak TLS: it answered in plain
# bytes (WRONG_VERSION_NUMBER, "record layer failure" on OpenSSL 3.2+), or hung up on the
# ClientHello it could not read (UNEXPECTED_EOF_WHILE_READING, EOF in violation of protocol)
_NOT_TLS = ("wrong_version_number", "record layer failure", "unexpected_eof", "eof occurred")


def speaks_no_tls(exc: BaseException) -> bool:
    """Whether ``exc``, met in a TLS client's handshake, says the server does not speak TLS."""
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return True
    text = f"{getattr(exc, 'reason', '') or ''} {exc}".lower()
    return isinstance(exc, ssl.SSLError) and any(words in text for words in _NOT_TLS)


def tls_error(exc: ssl.SSLError, url: str) -> IpcwireError:
    """The error for a failed TLS handshake, the same on both drivers: an untrusted or
    misnamed certificate is AuthenticationFailed (the server did not prove who it is), the
    rest ChannelBroken. (An SSLError's errno is OpenSSL's code, not an OS errno: translating
    it would turn SSL_ERROR_SSL, 1, into a PermissionDenied.)"""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return AuthenticationFailed(
            f"TLS handshake with {url} failed: the server's certificate is not trusted "
            f"({exc.verify_message or exc}); pass an ssl context that trusts its CA "
            f"(ssl.create_default_context(cafile=...)) and a server_hostname= that the "
            f"certificate names",
            endpoint=url,
        )
    err = translate(ConnectionResetError(str(exc)), url, "TLS handshake with")
    if speaks_no_tls(exc):
        return ChannelBroken(f"{err}: {NO_TLS_HINT}", endpoint=url)
    return err


NO_TLS_HINT: Final = (
    "the server does not seem to speak TLS (it answered in plain bytes, or hung up on the "
    "TLS greeting): connect without ssl=, or check the port"
)
PLAIN_HINT: Final = (
    "; or the server serves TLS: then pass ssl= (an ssl.SSLContext that trusts its certificate)"
)


def retried(err: IpcwireError, exc: OSError) -> bool:
    """Whether ``reconnect=`` retries a connect that failed so: refused (nothing listens
    yet), the host unreachable (EHOSTUNREACH, ENETUNREACH: no route, no answer to ARP; a
    route or a link coming back), or a temporary failure of name resolution (EAI_AGAIN; a
    name that does not exist is not retried). Not an attempt that got no answer at all: its
    timeout= bounds it."""
    if isinstance(err, ConnectionRefused):
        return True
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN
    return exc.errno in UNREACHABLE


def connect_error(
    exc: OSError, explained: IpcwireError | None, url: str, reconnect: float | None
) -> IpcwireError:
    """The error of a connect to ``url`` that failed with ``exc`` (after retrying for
    ``reconnect`` seconds, if given): the driver's own words (``explained``), or the host
    unreachable (:func:`~ipcwire._oserror.unreachable`), or the usual translation."""
    if explained is not None:
        if reconnect and retried(explained, exc):
            kind = ConnectionRefused if isinstance(explained, ConnectionRefused) else ChannelBroken
            return kind(f"{explained} (kept trying for {reconnect} s)", endpoint=url)
        return explained
    if exc.errno in UNREACHABLE and not isinstance(exc, IpcwireError):
        return unreachable(exc, url, reconnect=reconnect)
    err = translate(exc, url, "connecting to")
    if reconnect and retried(err, exc):
        kind = ConnectionRefused if isinstance(err, ConnectionRefused) else ChannelBroken
        return kind(f"{err} (kept trying for {reconnect} s)", endpoint=url)
    return err


def connect_stream(
    options: ChannelOptions,
    open_socket: Callable[[float], socket.socket],
    explain: Callable[[OSError], IpcwireError | None],
    *,
    timeout: float | None,
    reconnect: float | None,
    peer: Callable[[socket.socket], PeerInfo],
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    handshake_hint: str = "",
) -> StreamChannel:
    """Connect (retrying refused connections until ``reconnect`` seconds have passed, with
    exponential backoff and jitter), optionally wrap in TLS, handshake, and return a channel.

    ``open_socket(remaining)`` returns a connected socket or raises OSError; ``explain`` turns
    an OSError into a helpful ipcwire error (or None for the generic translation);
    ``handshake_hint`` is added to a ChannelBroken met in the handshake, after the connection
    was made (tcp:// without ssl=: PLAIN_HINT, as a TLS server resets a plain client).
    """
    url = options.url
    start = time.monotonic()
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    retry_until = start + reconnect if reconnect else None
    delays = backoff_delays()
    while True:
        now = time.monotonic()
        # Each attempt's connect, TLS and handshake together get ``limit``, as in the asyncio
        # driver (reconnect= only decides how long refused attempts are retried).
        attempt_end = now + limit
        try:
            sock = open_socket(max(attempt_end - now, 0.001))
        except OSError as exc:
            explained = explain(exc)
            err = explained or translate(exc, url, "connecting to")
            if retry_until is not None and retried(err, exc):
                now = time.monotonic()
                if now < retry_until:
                    time.sleep(min(next(delays), retry_until - now))
                    continue
                raise connect_error(exc, explained, url, reconnect) from exc
            if isinstance(exc, TimeoutError):
                if isinstance(exc, IpcwireError):
                    raise  # the driver's own words (a unix listener's full backlog)
                raise no_answer(url, limit, reconnect) from exc
            raise connect_error(exc, explained, url, None) from exc
        try:
            return _handshake(options, sock, attempt_end, peer, ssl_context, server_hostname, url)
        except ChannelBroken as exc:
            # The server went away between accepting and answering (a reset, or end of
            # stream: restarting, killed): within reconnect=, as a refusal, try again.
            if type(exc) is not ChannelBroken:
                raise
            if retry_until is None:
                if handshake_hint:
                    raise ChannelBroken(f"{exc}{handshake_hint}", endpoint=url) from (
                        exc.__cause__ or exc
                    )
                raise
            now = time.monotonic()
            if now >= retry_until:
                raise ChannelBroken(
                    f"{exc}{handshake_hint} (kept trying for {reconnect} s)", endpoint=url
                ) from exc
            time.sleep(min(next(delays), retry_until - now))


def _handshake(
    options: ChannelOptions,
    sock: socket.socket,
    attempt_end: float,
    peer: Callable[[socket.socket], PeerInfo],
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    url: str,
) -> StreamChannel:
    """TLS (if asked) and the client handshake on the connected ``sock``, then the channel;
    ``sock`` is closed if they fail."""
    try:
        info = peer(sock)
        stream: ByteStream
        if ssl_context is not None:
            sock.settimeout(max(attempt_end - time.monotonic(), 0.001))
            tls = ssl_context.wrap_socket(sock, server_hostname=server_hostname)
            stream = TlsStream(tls)
        else:
            stream = SocketStream(sock)
        hs_deadline = min(attempt_end, time.monotonic() + options.handshake_timeout)
        wire, decoder = client_handshake(stream, options, hs_deadline, goodbye=True)
    except BaseException as exc:
        sock.close()
        if isinstance(exc, ssl.SSLError):
            raise tls_error(exc, url) from exc
        if isinstance(exc, OSError) and not isinstance(exc, IpcwireError):
            raise translate(exc, url, "connecting to") from exc
        raise
    ch = StreamChannel(stream, wire, url, peer=info, decoder=decoder)
    ch.refusal_possible = not options.client_handshake().needed
    return ch
