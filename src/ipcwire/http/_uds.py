"""Connecting the HTTP client over a Unix socket whose listener's backlog may be full.

httpx connects ``http+unix`` sockets through httpcore's network backends, which take a full
backlog for something else: the blocking one raises at once (Linux says EAGAIN to the
connect; httpcore calls it a ``ConnectError``, ipcwire said "timed out while connecting"
whatever the timeout), and anyio's, under the asyncio client, takes the EAGAIN for "in
progress" and waits for the socket to become writable, which an unconnected Unix socket is
at once: it spins a CPU until the timeout, then says only ``ConnectTimeout``. A full backlog
is a busy server: these backends wait for room as ``unix://`` does
(:func:`ipcwire.unix._socket.connect_when_room`), until the connect timeout, then raise
:class:`BacklogFull` (an httpcore ``ConnectTimeout``) holding the
:func:`~ipcwire.unix._socket.backlog_full` ``Timeout``, which
:func:`ipcwire.http._connect.transport_error` raises.

httpx 0.28 takes no ``network_backend=`` (encode/httpx#3180), so :func:`use_backend` sets it
on the transport's connection pool, which passes it to every connection it opens; a pool of
another shape keeps httpcore's own backend.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.abc
import httpcore
from httpcore._backends.sync import SyncStream  # (httpcore's own stream over a socket)

from ipcwire.errors import Timeout
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT
from ipcwire.unix._aio_socket import aio_connect_when_room
from ipcwire.unix._socket import backlog_full, connect_when_room

__all__ = ["AioUnixBackend", "BacklogFull", "UnixBackend", "use_backend"]

SocketOptions = Iterable[Any] | None


class BacklogFull(httpcore.ConnectTimeout):
    """The listener's backlog stayed full for the connect timeout; ``error`` says so in
    ipcwire's words (httpcore does not keep an exception's ``__cause__`` on its way up)."""

    def __init__(self, url: str, limit: float) -> None:
        self.error = backlog_full(url, limit)
        super().__init__(str(self.error))


def use_backend(transport: Any, backend: httpcore.NetworkBackend | AioUnixBackend) -> None:
    """Have ``transport`` (httpx.HTTPTransport or AsyncHTTPTransport) connect through
    ``backend`` (see the module's docstring)."""
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = backend


class UnixBackend(httpcore.NetworkBackend):
    """httpcore's blocking backend, trying a Unix connect again while the backlog is full."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._default = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions = None,
    ) -> httpcore.NetworkStream:
        return self._default.connect_tcp(host, port, timeout, local_address, socket_options)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions = None
    ) -> httpcore.NetworkStream:
        # Our own socket, not SyncBackend's: that one is left open when its connect fails
        # (a ResourceWarning, and a descriptor until the garbage collector comes; helper-90).
        limit = DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(limit)
            connect_when_room(sock, path, time.monotonic() + limit, self._url, limit)
        except Timeout as exc:  # the backlog stayed full
            sock.close()
            raise BacklogFull(self._url, limit) from exc
        except TimeoutError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return SyncStream(sock)

    def sleep(self, seconds: float) -> None:
        self._default.sleep(seconds)


class AioUnixBackend(httpcore.AsyncNetworkBackend):
    """anyio's backend (asyncio), with Unix connects that wait while the backlog is full
    instead of spinning (see the module's docstring)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._default = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._default.connect_tcp(host, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions = None
    ) -> httpcore.AsyncNetworkStream:
        limit = DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout
        busy = False

        def mark_busy() -> None:
            nonlocal busy
            busy = True

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            with anyio.fail_after(limit):
                await aio_connect_when_room(sock, path, mark_busy)
            for option in socket_options or ():
                sock.setsockopt(*option)
            stream = await anyio.abc.UNIXSocketStream.from_socket(sock)
        except TimeoutError as exc:
            sock.close()
            if busy:
                raise BacklogFull(self._url, limit) from exc
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            sock.close()
            raise
        return _UnixStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._default.sleep(seconds)


class _UnixStream(httpcore.AsyncNetworkStream):
    """A connected anyio Unix socket stream, its failures in httpcore's terms."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            with anyio.fail_after(timeout):
                return await self._stream.receive(max_bytes)
        except anyio.EndOfStream:
            return b""
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            with anyio.fail_after(timeout):
                await self._stream.send(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("TLS is not used over http+unix")  # (never asked)

    def get_extra_info(self, info: str) -> Any:
        sock = self._stream.extra(anyio.abc.SocketAttribute.raw_socket, None)  # noqa: S610
        if info == "socket":
            return sock
        if info == "is_readable":  # (httpcore: has an idle connection's peer closed it?)
            if sock is None or sock.fileno() < 0:
                return True
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        return None
