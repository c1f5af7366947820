"""The blocking connect loop shared by stream-socket mechanisms: retries, handshake, channel."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable

from ipcwire._oserror import translate
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
    Timeout,
)
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "connect_stream", "tls_error"]


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
    return translate(ConnectionResetError(str(exc)), url, "TLS handshake with")


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
) -> StreamChannel:
    """Connect (retrying refused connections until ``reconnect`` seconds have passed, with
    exponential backoff and jitter), optionally wrap in TLS, handshake, and return a channel.

    ``open_socket(remaining)`` returns a connected socket or raises OSError; ``explain`` turns
    an OSError into a helpful ipcwire error (or None for the generic translation).
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
            err = explain(exc) or translate(exc, url, "connecting to")
            if isinstance(err, ConnectionRefused) and retry_until is not None:
                now = time.monotonic()
                if now < retry_until:
                    time.sleep(min(next(delays), retry_until - now))
                    continue
                raise ConnectionRefused(
                    f"{err} (kept trying for {reconnect} s)", endpoint=url
                ) from exc
            if isinstance(exc, TimeoutError):
                if isinstance(exc, IpcwireError):
                    raise  # the driver's own words (a unix listener's full backlog)
                raise Timeout(f"connecting to {url} took over {limit} s", endpoint=url) from exc
            raise err from exc
        try:
            return _handshake(options, sock, attempt_end, peer, ssl_context, server_hostname, url)
        except ChannelBroken as exc:
            # The server went away between accepting and answering (a reset, or end of
            # stream: restarting, killed): within reconnect=, as a refusal, try again.
            if type(exc) is not ChannelBroken or retry_until is None:
                raise
            now = time.monotonic()
            if now >= retry_until:
                raise ChannelBroken(f"{exc} (kept trying for {reconnect} s)", endpoint=url) from exc
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
