"""Shared memory, asyncio driver: ``await ipcwire.aio.connect("shm://name")`` and ``listen``.

This module sets connections up: ``connect`` and :class:`AioShmListener` run the handshake
and hand the rings over the Unix socket, each within its timeout. The channel they return,
:class:`~ipcwire.shm._aio_channel.AioShmChannel` (native asyncio, never a thread: see that
module), is defined in ``_aio_channel`` and exported here, its public import path.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from ipcwire._core.handshake import ServerHandshake
from ipcwire._core.url import Endpoint
from ipcwire._oserror import accept_failed
from ipcwire._stream.listener import collected_unclosed, thread_twin
from ipcwire.aio._timeouts import within
from ipcwire.aio.channel import AcceptQueue, AioListener
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelClosed, ConnectionRefused, IpcwireError, ResourceExhausted
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions, reject_unknown
from ipcwire.shm._aio_channel import AioShmChannel
from ipcwire.shm._aiosock import open_socket, recv_frame, send_fds, translate_setup_error
from ipcwire.shm._droplines import log_dropped, log_refused
from ipcwire.shm._naming import ShmOptions, shm_options, socket_path, where_else
from ipcwire.shm._setup import (
    MAX_PENDING,
    ClientSetup,
    refusal,
    server_setup,
)
from ipcwire.unix._socket import (
    UnixAddress,
    bind_listener,
    make_authorizer,
    peer_info,
)

__all__ = ["AioShmChannel", "AioShmListener", "connect", "listen"]

log = logging.getLogger("ipcwire")


async def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    **kw: Any,
) -> AioShmChannel:
    """Connect to a shared-memory listener; options as for the blocking ``connect``."""
    shm = shm_options(endpoint, kw)
    reject_unknown(kw, endpoint, ("timeout", "reconnect", "capacity", "policy", "spin_us"))
    url = endpoint.url
    path = socket_path(endpoint)
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    loop = asyncio.get_running_loop()
    try:
        sock, began = await open_socket(path, url, limit, reconnect)
    except ConnectionRefused as exc:
        where_else(exc, endpoint, path)
        raise
    setup: ClientSetup | None = None
    now = time.monotonic()
    try:
        # timeout= bounds the attempt's connect and handshake together (as unix:// does)
        async with within(max(min(began + limit, now + options.handshake_timeout) - now, 0)):
            info = peer_info(sock, path)
            hs = options.client_handshake("length")  # rings keep boundaries
            try:
                await loop.sock_sendall(sock, hs.hello())
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server refused at once: its reason is waiting to be read below
            while True:
                body, _ = await recv_frame(loop, sock, 0)
                step = hs.receive(body)
                if step.send:
                    await loop.sock_sendall(sock, step.send)
                if step.done:
                    break
            setup = ClientSetup(
                shm.capacity,
                name=url,
                max_message=options.max_frame,
                **shm.ring_kw,
            )
            data, fds = setup.hello()
            await send_fds(loop, sock, data, fds)
            setup.sent()
            body, peer_fds = await recv_frame(loop, sock, 0)
            link = setup.finish(body, peer_fds, sock)
    except BaseException as exc:
        if setup is not None:
            setup.abort()
        sock.close()
        translate_setup_error(exc, url, options, min(limit, options.handshake_timeout))
        raise
    wire = options.wire()
    wire.send_limit = hs.peer_max_frame
    return AioShmChannel(link, wire, url, info, loop)


# -- listening --------------------------------------------------------------------------------


class AioShmListener(AioListener):
    """Accepts shared-memory connections (asyncio); each handshake and setup runs in its own
    task, bounded by the handshake timeout, so no client delays another.

    At most ``max_ready`` connections (the backlog) wait set up for ``accept()``, and at
    most ``MAX_PENDING`` are being set up; the clients behind them wait in the kernel's
    backlog until it makes room (as the blocking listener does)."""

    def __init__(
        self,
        sock: socket.socket,
        url: str,
        options: ChannelOptions,
        shm: ShmOptions,
        *,
        authorize: Callable[[socket.socket], tuple[PeerInfo, IpcwireError | None]],
        cleanup: Callable[[], None],
        max_ready: int = 128,
    ) -> None:
        self.url = url
        self._sock = sock
        self._options = options
        self._shm = shm
        self._authorize = authorize
        self._cleanup = cleanup
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._ready: AcceptQueue[AioShmChannel] = AcceptQueue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_ready = max(1, max_ready)
        self._reserved = 0  # setups past their handshake, each holding a place among _ready
        self._space = asyncio.Event()  # set when a place among the backlog may have come free
        self._room = asyncio.Event()
        self._room.set()
        sock.setblocking(False)
        # The acceptor task is its twin's (see thread_twin): a task running a method of this
        # listener would keep it alive for ever, so a listener the program dropped without
        # close() would hold its socket file until exit. Its setup tasks are the twin's too.
        self._twin = thread_twin(self)
        self._acceptor = self._loop.create_task(self._twin._accept_loop())
        self._dropped = False  # collected without close(): closed at the loop's next turn

    def __del__(self) -> None:
        """Collected without :meth:`close`: a ``ResourceWarning``, and its twin is closed at
        the loop's next turn (a finalizer must not wait, nor touch the loop's state)."""
        if collected_unclosed(self):
            try:
                self._loop.call_soon_threadsafe(self._twin.close)
            except RuntimeError:  # the loop is closed: its tasks and readers went with it
                self._twin.close()

    async def accept(self, *, timeout: float | None = None) -> AioShmChannel:
        ch = await self._ready.get(self.url, timeout)
        self._space.set()
        self._check_room()
        return ch

    def _has_space(self) -> bool:
        """Whether one more client may be set up: those set up and those being set up past
        their handshake stay within the backlog (as on the blocking listener)."""
        return self._ready.qsize() + self._reserved < self._max_ready

    def _check_room(self, _: object = None) -> None:
        # (handshakes under way count apart: a silent client must not hold a small backlog)
        if len(self._tasks) < MAX_PENDING and self._has_space():
            self._room.set()
        else:
            self._room.clear()

    async def _reserve(self) -> None:
        """Take a place among the backlog (after the handshake, before the rings cost
        anything here); wait for one while it is full. A burst of clients all passed the
        acceptor's room check before any had finished, and all were set up."""
        while not (self._closed or self._has_space()):
            self._space.clear()
            await self._space.wait()
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        self._reserved += 1

    async def _accept_loop(self) -> None:
        while not self._closed:
            await self._room.wait()
            try:
                conn, _ = await self._loop.sock_accept(self._sock)
            except OSError as exc:
                if self._closed:
                    return
                await asyncio.sleep(accept_failed(exc, self.url) or 0.05)  # (not spinning)
                continue
            try:  # the room may have gone while accept waited: hold this one until there is
                self._check_room()
                await self._room.wait()
            except BaseException:
                conn.close()
                raise
            task = self._loop.create_task(self._setup(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(self._check_room)
            self._check_room()

    async def _setup(self, conn: socket.socket) -> None:
        options, url, loop = self._options, self.url, self._loop
        conn.setblocking(False)
        reserved = False
        peer: PeerInfo | None = None
        hs: ServerHandshake | None = None
        told: IpcwireError | None = None  # the refusal the client was sent
        try:
            async with within(options.handshake_timeout):
                peer, refused = self._authorize(conn)
                hs = options.server_handshake("length")
                if refused is not None:
                    told = refused
                    log_refused(url, peer, told)  # (before the client can know: then close())
                    await loop.sock_sendall(conn, hs.reject(refused, "permission").send)
                    raise refused
                while True:
                    body, _ = await recv_frame(loop, conn, 0)
                    step = hs.receive(body)
                    told = step.error
                    if told is not None:
                        log_refused(url, peer, told)
                    if step.send:
                        await loop.sock_sendall(conn, step.send)
                    if step.error is not None:
                        raise step.error
                    if step.done:
                        break
                await self._reserve()
                reserved = True
                try:
                    body, fds = await recv_frame(loop, conn, 3)
                except ResourceExhausted as exc:
                    await loop.sock_sendall(conn, refusal(exc))
                    raise
                try:
                    link, answer = server_setup(
                        body,
                        fds,
                        conn,
                        name=url,
                        max_message=options.max_frame,
                        **self._shm.ring_kw,
                    )
                except IpcwireError as exc:
                    await loop.sock_sendall(conn, refusal(exc))
                    raise
                try:
                    await loop.sock_sendall(conn, answer)
                except BaseException:
                    link.close()
                    raise
        except (IpcwireError, OSError) as exc:  # TimeoutError is an OSError
            if told is None:  # (a refusal was logged before it was sent)
                log_dropped(url, peer, exc, hs)
            conn.close()
            self._unreserve(reserved)
            return
        except asyncio.CancelledError:
            conn.close()
            self._unreserve(reserved)
            raise
        wire = options.wire()
        wire.send_limit = hs.peer_max_frame
        ch = AioShmChannel(link, wire, url, peer, loop)
        if self._closed:
            ch.close()
        else:
            self._ready.put(ch)
        self._unreserve(reserved)

    def _unreserve(self, reserved: bool) -> None:
        if reserved:
            self._reserved -= 1
            self._space.set()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._loop.is_closed():  # (else its tasks and readers went with it)
            self._space.set()
            self._acceptor.cancel()
            for task in list(self._tasks):
                task.cancel()
            self._ready.close()
            # The cancelled accept leaves the loop watching the socket until the loop next
            # runs; closed first, its fd number could go to a new socket that the loop then
            # never watched (the next asyncio listener or connection in this loop hung), or
            # whose watch the late removal took away. Unwatched now, the late removal does
            # nothing.
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._cleanup()


async def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    mode: int = 0o600,
    allow_uids: Iterable[int] | None = None,
    backlog: int = 128,
    **kw: Any,
) -> AioShmListener:
    """Listen for shared-memory connections (asyncio); options as for the blocking one
    (``capacity=`` is the connecting side's: a ConfigurationError here)."""
    shm = shm_options(endpoint, kw, listening=True)
    reject_unknown(kw, endpoint, ("mode", "allow_uids", "backlog", "policy", "spin_us"))
    path = socket_path(endpoint, create_dir=True)
    sock, cleanup = bind_listener(UnixAddress(path, None), endpoint.url, mode=mode, backlog=backlog)
    return AioShmListener(
        sock,
        endpoint.url,
        options,
        shm,
        authorize=make_authorizer(endpoint.url, path, allow_uids),
        cleanup=cleanup,
        max_ready=backlog,
    )
