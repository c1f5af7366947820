"""Opening and binding the sockets under WebSocket channels (TCP or Unix), both flavours.

Connecting retries refused connections (and unreachable hosts) for ``reconnect`` seconds with
backoff and jitter, like the stream mechanisms; binding reuses their safe binders
(``AddressInUse`` names the process holding the port or path; Unix socket files are created
0600 and never stolen).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from ipcwire._oserror import no_answer, translate
from ipcwire._stream.connect import NO_TLS_HINT, connect_error, retried, speaks_no_tls
from ipcwire._stream.retry import backoff_delays
from ipcwire.aio._timeouts import within_at
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelBroken, ConfigurationError, IpcwireError, RemoteProtocolError
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT
from ipcwire.tcp._socket import TcpAddress
from ipcwire.tcp._socket import bind_listener as bind_tcp
from ipcwire.unix._aio_socket import aio_connect_when_room
from ipcwire.unix._socket import (
    backlog_full,
    connect_when_room,
    explain_connect_error,
    make_authorizer,
)
from ipcwire.unix._socket import bind_listener as bind_unix
from ipcwire.unix._socket import peer_info as unix_peer_info
from ipcwire.ws._common import WsAddress

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "aio_open",
    "bind",
    "open_blocking",
    "peer_of",
    "set_nodelay",
    "tls_mismatch",
]


Authorizer = Callable[[socket.socket], tuple[PeerInfo, IpcwireError | None]]


def peer_of(sock: socket.socket, addr: WsAddress) -> PeerInfo:
    """Who is at the other end: credentials on a Unix socket, the address on TCP."""
    if addr.unix is not None:
        return unix_peer_info(sock, str(addr.unix))
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return PeerInfo()
    return PeerInfo(address=f"{host}:{port}")


def _explain(exc: OSError, addr: WsAddress, url: str) -> IpcwireError | None:
    """ws+unix's own words for a failed connect (None: the usual ones, connect_error's)."""
    if addr.unix is not None:
        return explain_connect_error(exc, addr.unix, url)
    return None


def _new_socket(addr: WsAddress) -> socket.socket:
    if addr.unix is not None:
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    return socket.socket(family, socket.SOCK_STREAM)


def _target(addr: WsAddress) -> str | bytes | tuple[str, int]:
    return addr.unix.sockaddr if addr.unix is not None else (addr.host, addr.port)


def open_blocking(
    addr: WsAddress, url: str, *, timeout: float | None, reconnect: float | None
) -> tuple[socket.socket, float]:
    """A connected socket, and the deadline left for the WebSocket handshake.

    A Unix listener whose backlog is full is busy, not gone: the connect tries again until
    the timeout, as ``unix://`` does (:func:`~ipcwire.unix._socket.connect_when_room`).

    Raises:
        ConnectionRefused: nothing listens (after ``reconnect`` seconds, if given).
        ChannelBroken: the host is unreachable (after ``reconnect`` seconds, if given).
        Timeout: the connect took over ``timeout`` (or the backlog stayed full that long):
            ``timeout`` bounds each attempt, and one that got no answer is not retried.
        PermissionDenied, ChannelBroken: with the fix in the message.
    """
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    start = time.monotonic()
    retry_until = start + reconnect if reconnect else None
    delays = backoff_delays()
    while True:
        # each attempt has timeout= for its connect and handshake together; reconnect= only
        # says how long refused attempts are tried again
        deadline = time.monotonic() + limit
        try:
            if addr.unix is None:
                sock = socket.create_connection(
                    (addr.host, addr.port), timeout=max(deadline - time.monotonic(), 0.001)
                )
            else:
                sock = _new_socket(addr)
                try:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    connect_when_room(sock, addr.unix.sockaddr, deadline, url, limit)
                except BaseException:
                    sock.close()
                    raise
            sock.settimeout(None)
            return sock, deadline
        except IpcwireError:  # (a Timeout is an OSError too: its words are the right ones)
            raise
        except OSError as exc:
            explained = _explain(exc, addr, url)
            err = explained or translate(exc, url, "connecting to")
            if retry_until is not None and retried(err, exc):
                now = time.monotonic()
                if now < retry_until:
                    time.sleep(min(next(delays), retry_until - now))
                    continue
                raise connect_error(exc, explained, url, reconnect) from exc
            if isinstance(exc, TimeoutError):
                raise no_answer(url, limit, reconnect) from exc
            raise connect_error(exc, explained, url, None) from exc


async def aio_open(
    addr: WsAddress, url: str, *, timeout: float | None, reconnect: float | None
) -> tuple[socket.socket, float]:
    """The asyncio version of :func:`open_blocking` (a non-blocking connected socket, and the
    deadline on the loop's clock)."""
    loop = asyncio.get_running_loop()
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    retry_until = loop.time() + reconnect if reconnect else None
    delays = backoff_delays()
    busy = False  # the last attempt found the Unix listener's backlog full

    def mark_busy() -> None:
        nonlocal busy
        busy = True

    while True:
        deadline = loop.time() + limit  # (as in open_blocking)
        sock = _new_socket(addr)
        sock.setblocking(False)
        busy = False
        try:
            async with within_at(deadline):
                if addr.unix is not None:  # (loop.sock_connect takes a full backlog's EAGAIN
                    # for "in progress" and hands over a socket that never connected)
                    await aio_connect_when_room(sock, addr.unix.sockaddr, mark_busy)
                else:
                    await loop.sock_connect(sock, _target(addr))
            return sock, deadline
        except TimeoutError as exc:
            sock.close()
            if busy:
                raise backlog_full(url, limit) from exc
            raise no_answer(url, limit, reconnect) from exc
        except OSError as exc:
            sock.close()
            explained = _explain(exc, addr, url)
            err = explained or translate(exc, url, "connecting to")
            if retry_until is not None and retried(err, exc):
                now = loop.time()
                if now < retry_until:
                    await asyncio.sleep(min(next(delays), retry_until - now))
                    continue
                raise connect_error(exc, explained, url, reconnect) from exc
            raise connect_error(exc, explained, url, None) from exc
        except BaseException:
            sock.close()
            raise


def bind(
    addr: WsAddress,
    url: str,
    *,
    backlog: int,
    mode: int | None,
    allow_uids: Iterable[int] | None,
) -> tuple[socket.socket, int, Authorizer, Callable[[], None]]:
    """A listening socket, the port it got (0 on Unix), its authorizer and its cleanup.

    ``mode`` (``None``: 0600) and ``allow_uids`` are for ``ws+unix``;
    :func:`~ipcwire.ws._admission.listen_address` has refused them on TCP.
    """
    if addr.unix is not None:
        uids = None if allow_uids is None else list(allow_uids)
        if uids is None and addr.unix.abstract is not None:
            uids = [os.getuid()]  # abstract names have no file mode to protect them
        sock, cleanup = bind_unix(
            addr.unix, url, mode=0o600 if mode is None else mode, backlog=backlog
        )
        return sock, 0, make_authorizer(url, str(addr.unix), uids), cleanup
    if allow_uids is not None or mode is not None:  # (never silently ignored)
        raise ConfigurationError(f"mode= and allow_uids= are for ws+unix://, not {url}")
    sock = bind_tcp(TcpAddress(addr.host, addr.port), url, backlog)
    port = sock.getsockname()[1]

    def authorize(conn: socket.socket) -> tuple[PeerInfo, IpcwireError | None]:
        return peer_of(conn, addr), None

    return sock, port, authorize, lambda: None


def tls_mismatch(err: IpcwireError, exc: BaseException, url: str, secure: bool) -> IpcwireError:
    """``err`` (open_error's, for ``exc`` met opening the WebSocket connection to ``url``),
    with a hint when the failure looks like a TLS mismatch: a ws:// client whose HTTP
    request got no valid answer (a wss:// server drops what is not TLS), or a wss:// client
    whose TLS handshake met something that does not speak TLS."""
    if not secure and url.startswith("ws:") and type(err) is RemoteProtocolError:
        if "did not receive a valid HTTP response" in str(err):
            return RemoteProtocolError(
                f"{err}; or the server serves TLS: then connect to wss:{url[len('ws:') :]} "
                f"(with ssl= an ssl.SSLContext that trusts its certificate)",
                endpoint=url,
            )
        return err
    cause: BaseException | None = exc
    while cause is not None:  # (the library may wrap the SSLError)
        no_errno = isinstance(cause, ConnectionResetError) and cause.errno is None
        if secure and (speaks_no_tls(cause) or no_errno):  # (asyncio: lost during TLS)
            plain = f"ws:{url[len('wss:') :]}" if url.startswith("wss:") else url
            return ChannelBroken(
                f"the TLS handshake with {url} failed ({str(cause) or 'the connection was lost'}): "
                f"{NO_TLS_HINT.replace('without ssl=', f'to {plain} without ssl=')}",
                endpoint=url,
            )
        cause = cause.__cause__ or cause.__context__
    return err


def set_nodelay(sock: Any) -> None:
    """No Nagle delay on TCP (asyncio only sets it when the socket's proto says TCP)."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
