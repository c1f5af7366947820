"""Socket I/O of the shared-memory setup for asyncio (the blocking side uses ``_frames``').

Nothing here blocks the event loop: non-blocking ``recvmsg``/``sendmsg`` (the setup carries
file descriptors, which ``loop.sock_*`` cannot), waiting for readiness with
``add_reader``/``add_writer``.
"""

from __future__ import annotations

import asyncio
import socket
import time

from ipcwire._oserror import translate
from ipcwire._stream.retry import backoff_delays
from ipcwire.aio._timeouts import within
from ipcwire.errors import ConnectionRefused, IpcwireError, Timeout
from ipcwire.options import ChannelOptions
from ipcwire.shm._frames import FrameReader
from ipcwire.unix._aio_socket import aio_connect_when_room
from ipcwire.unix._socket import UnixAddress, backlog_full, explain_connect_error

__all__ = ["open_socket", "recv_frame", "send_fds", "translate_setup_error"]


# -- socket I/O for the setup -----------------------------------------------------------------


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, write: bool) -> None:
    """Until the socket is readable (or writable)."""
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    if write:
        loop.add_writer(fd, _settle, fut)
    else:
        loop.add_reader(fd, _settle, fut)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def recv_frame(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, maxfds: int
) -> tuple[bytes, list[int]]:
    reader = FrameReader(maxfds)
    try:
        while want := reader.want():
            try:
                data, anc, flags, _ = sock.recvmsg(
                    want, reader.ancillary, socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                await _ready(loop, sock, write=False)
                continue
            reader.feed(data, anc, flags)
        return reader.take()
    finally:
        reader.discard()


async def send_fds(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes, fds: list[int]
) -> None:
    while True:
        try:
            sent = socket.send_fds(sock, [data], fds, socket.MSG_DONTWAIT)
            break
        except BlockingIOError:
            await _ready(loop, sock, write=True)
    if sent < len(data):
        await loop.sock_sendall(sock, data[sent:])


def translate_setup_error(
    exc: BaseException, url: str, options: ChannelOptions, budget: float
) -> None:
    """As the blocking driver's: ``budget`` is the time the handshake had (timeout= or
    handshake_timeout, the shorter)."""
    if isinstance(exc, IpcwireError):
        return
    if isinstance(exc, TimeoutError):
        raise Timeout(
            f"{url} did not complete the handshake within {budget:.3g} s"
            + ("; does the server use a token too?" if options.token else ""),
            endpoint=url,
        ) from exc
    if isinstance(exc, OSError):
        raise translate(exc, url, "connecting to") from exc


async def open_socket(
    path: str, url: str, limit: float, reconnect: float | None
) -> tuple[socket.socket, float]:
    """The connected socket, and when (``time.monotonic()``) the attempt that connected
    began: ``limit`` covers that attempt's handshake too."""
    retry_until = time.monotonic() + reconnect if reconnect else None
    delays = backoff_delays()
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        began = time.monotonic()
        busy = False

        def mark_busy() -> None:
            nonlocal busy
            busy = True

        try:
            async with within(limit):
                await aio_connect_when_room(sock, path, mark_busy)  # (a full backlog waits)
            return sock, began
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                if busy:
                    raise backlog_full(url, limit) from exc
                raise Timeout(f"connecting to {url} took over {limit} s", endpoint=url) from exc
            err = explain_connect_error(exc, UnixAddress(path, None), url) or translate(
                exc, url, "connecting to"
            )
            if isinstance(err, ConnectionRefused) and retry_until is not None:
                now = time.monotonic()
                if now < retry_until:
                    await asyncio.sleep(min(next(delays), retry_until - now))
                    continue
                raise ConnectionRefused(
                    f"{err} (kept trying for {reconnect} s)", endpoint=url
                ) from exc
            raise err from exc
