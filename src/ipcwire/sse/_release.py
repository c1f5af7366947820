"""Telling the server that a client is done with its stream, when the application closes it.

A dropped connection and a client that closed look alike to the server: it keeps the stream,
its replay buffer and its server-side channel for ``resume_window`` seconds, in case the
client comes back with ``Last-Event-ID``. A client that closed never comes back, so
ipcwire's client says so on ``close()``, on a connection of its own::

    DELETE <path> HTTP/1.1
    Host: <host>
    X-Ipcwire-Stream: <stream id>          (the response header of the stream's GET)
    Authorization: Bearer <token>          (as the GET: the listener's token, if it has one)
    Connection: close

and the server ends that stream at once (``204``; ``404`` for a stream it does not hold;
see ``SseServer._release`` and docs/mechanisms/sse.md, "Closing"). Best effort and bounded:
it never raises, gives up after ``RELEASE_TIMEOUT``, and is not sent at all when there is
nothing to end (no ipcwire stream, the server ended it and the client never read the end,
another client took it over, the client gave up on it, or this is a forked child's copy of
the parent's client).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
import time
from typing import Any, Final

from ipcwire.aio._timeouts import within
from ipcwire.errors import IpcwireError
from ipcwire.sse._client import FATAL, ClientCore, SseAddress
from ipcwire.sse._http import build_request, parse_head
from ipcwire.sse._server import STREAM_HEADER

__all__ = ["RELEASE_TIMEOUT", "Release", "release_async", "release_blocking"]

log = logging.getLogger("ipcwire")

RELEASE_TIMEOUT: Final = 1.0  # seconds close() gives the DELETE, connecting included


class Release:
    """The DELETE ending one client's stream, and where to send it."""

    __slots__ = ("addr", "request", "sid", "tls", "url")

    def __init__(
        self, core: ClientCore, sid: str, tls: tuple[ssl_module.SSLContext, str] | None
    ) -> None:
        self.url = core.url
        self.addr: SseAddress = core.addr
        self.sid = sid
        self.tls = tls
        headers = {"User-Agent": "ipcwire"}
        if core.options.token is not None:
            headers["Authorization"] = "Bearer " + core.options.token.decode()
        headers.update(core.headers)  # as the GET: the application's headers win
        headers[STREAM_HEADER] = sid
        headers["Connection"] = "close"
        self.request = build_request(
            core.addr.host_header, core.addr.path, headers, method="DELETE"
        )

    @staticmethod
    def needed(core: ClientCore) -> str | None:
        """The stream to end (None: nothing to tell the server: it never announced an
        ipcwire stream, it is another client's now or ended without this client reading
        its end, or the server refused this client for good). A stream whose end event this
        client read is ended too: the server keeps an ended stream for ``resume_window``
        only for a client that lost its end, with its replay buffer."""
        if (core.stream_over and not core.end_read) or isinstance(core.final, FATAL):
            return None
        return core.stream_id

    def answered(self, status: int) -> None:
        if status in (204, 404):  # ended now, or already gone
            log.debug("%s: stream %s released (HTTP %d)", self.url, self.sid, status)
            return
        log.info(
            "%s did not end stream %s when this client closed (HTTP %d); the server "
            "keeps it until its resume_window= runs out",
            self.url,
            self.sid,
            status,
        )

    def unexpected(self) -> None:
        log.warning(
            "%s: telling the server that stream %s is closed failed unexpectedly",
            self.url,
            self.sid,
            exc_info=True,
        )

    def failed(self, exc: BaseException) -> None:
        log.debug(
            "%s: could not tell the server that stream %s is closed (%s); it keeps "
            "it until its resume_window= runs out",
            self.url,
            self.sid,
            str(exc) or type(exc).__name__,
        )


def release_blocking(release: Release, timeout: float = RELEASE_TIMEOUT) -> None:
    """Send the DELETE and read the answer's status, in the caller's thread; never raises
    (but for BaseExceptions such as KeyboardInterrupt)."""
    deadline = time.monotonic() + timeout
    addr = release.addr
    sock: socket.socket | None = None
    try:
        sock = socket.create_connection((addr.host, addr.port), timeout=timeout)
        if release.tls is not None:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock = release.tls[0].wrap_socket(sock, server_hostname=release.tls[1])
        sock.sendall(release.request)
        buf = bytearray()
        while (parsed := parse_head(buf, release.url)) is None:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed the connection before answering")
            buf += chunk
    except (OSError, IpcwireError) as exc:
        release.failed(exc)
        return
    except Exception:  # close() never raises; but say so, this is a bug
        release.unexpected()
        return
    finally:
        if sock is not None:
            sock.close()
    release.answered(parsed[0].status)


async def release_async(release: Release, timeout: float = RELEASE_TIMEOUT) -> None:
    """Send the DELETE and read the answer's status, in the running loop; never raises (but
    for cancellation)."""
    addr = release.addr
    tls: dict[str, Any] = {}
    if release.tls is not None:
        tls = {"ssl": release.tls[0], "server_hostname": release.tls[1]}
    writer: asyncio.StreamWriter | None = None
    try:
        async with within(timeout):
            reader, writer = await asyncio.open_connection(addr.host, addr.port, **tls)
            writer.write(release.request)
            buf = bytearray()
            while (parsed := parse_head(buf, release.url)) is None:
                chunk = await reader.read(4096)
                if not chunk:
                    raise ConnectionError("closed the connection before answering")
                buf += chunk
    except (OSError, IpcwireError) as exc:  # (TimeoutError is an OSError)
        release.failed(exc)
        return
    except Exception:  # close() never raises; but say so, this is a bug
        release.unexpected()
        return
    finally:
        if writer is not None:
            writer.transport.abort()
    release.answered(parsed[0].status)
