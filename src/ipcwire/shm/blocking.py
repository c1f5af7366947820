"""Shared memory, blocking driver: ``ipcwire.connect("shm://name")`` and ``listen``.

A connection: a Unix stream socket to the listener carries ipcwire's handshake (version,
codec, token), then the shared-memory setup (``_setup``), then nothing: it stays open as the
liveness signal. Messages travel through the two rings; with the bytes codec a send or a
receive is one call into the C extension. The channel itself is ``_blocking_channel.py``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ipcwire._core.handshake import ClientHandshake, ServerHandshake
from ipcwire._core.url import Endpoint
from ipcwire._deadline import limit
from ipcwire._oserror import accept_failed, translate
from ipcwire._stream.listener import collected_unclosed, thread_twin
from ipcwire._stream.retry import backoff_delays
from ipcwire.channel import Listener, PeerInfo
from ipcwire.errors import (
    ChannelClosed,
    ConnectionRefused,
    IpcwireError,
    ResourceExhausted,
    Timeout,
)
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions, reject_unknown
from ipcwire.shm._blocking_channel import ShmChannel
from ipcwire.shm._droplines import log_dropped, log_refused
from ipcwire.shm._frames import recv_frame
from ipcwire.shm._naming import ShmOptions, shm_options, socket_path, where_else
from ipcwire.shm._setup import MAX_PENDING, accept_link, connect_link
from ipcwire.unix._socket import (
    UnixAddress,
    bind_listener,
    connect_when_room,
    explain_connect_error,
    make_authorizer,
    peer_info,
)

__all__ = ["ShmChannel", "ShmListener", "connect", "listen"]

log = logging.getLogger("ipcwire")


# -- connecting -------------------------------------------------------------------------------


def _handshake_client(
    sock: socket.socket, options: ChannelOptions, deadline: float
) -> ClientHandshake:
    hs = options.client_handshake("length")  # rings keep boundaries
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    try:
        sock.sendall(hs.hello())
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server refused at once: its reason is waiting to be read below
    while True:
        body, _ = recv_frame(sock, deadline, 0)
        step = hs.receive(body)
        if step.send:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(step.send)
        if step.done:
            return hs


def _open(
    path: str, endpoint: Endpoint, limit: float, reconnect: float | None
) -> tuple[socket.socket, float]:
    """The connected socket, and when the attempt that connected began (its ``limit`` covers
    the handshake too)."""
    url = endpoint.url
    start = time.monotonic()
    retry_until = start + reconnect if reconnect else None
    delays = backoff_delays()
    addr = UnixAddress(path, None)
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        began = time.monotonic()
        try:
            sock.settimeout(limit)
            connect_when_room(sock, path, began + limit, url, limit)  # (a full backlog waits)
            return sock, began
        except IpcwireError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            err = explain_connect_error(exc, addr, url) or translate(exc, url, "connecting to")
            if isinstance(err, ConnectionRefused) and retry_until is not None:
                now = time.monotonic()
                if now < retry_until:
                    time.sleep(min(next(delays), retry_until - now))
                    continue
                raise ConnectionRefused(
                    f"{err} (kept trying for {reconnect} s)", endpoint=url
                ) from exc
            raise err from exc


def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    **kw: Any,
) -> ShmChannel:
    """Connect to a shared-memory listener; see :func:`ipcwire.connect`.

    Options: ``capacity`` (bytes per ring, default 1 MiB; a pair ``(to_server,
    from_server)`` sizes the two directions apart), ``policy``, ``spin_us`` (see
    ``ipcwire.shm._naming``), ``timeout``, ``reconnect``.
    """
    shm = shm_options(endpoint, kw)
    reject_unknown(kw, endpoint, ("timeout", "reconnect", "capacity", "policy", "spin_us"))
    url = endpoint.url
    path = socket_path(endpoint)
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    try:
        sock, began = _open(path, endpoint, limit, reconnect)
    except ConnectionRefused as exc:
        where_else(exc, endpoint, path)
        raise
    try:
        # timeout= bounds the attempt's connect and handshake together (as unix:// does)
        deadline = min(began + limit, time.monotonic() + options.handshake_timeout)
        info = peer_info(sock, path)
        hs = _handshake_client(sock, options, deadline)
        link = connect_link(
            sock,
            deadline=deadline,
            capacity=shm.capacity,
            name=url,
            max_message=options.max_frame,
            **shm.ring_kw,
        )
    except BaseException as exc:
        sock.close()
        _explain_client(exc, url, options, min(limit, options.handshake_timeout))
        raise
    wire = options.wire()
    wire.send_limit = hs.peer_max_frame
    return ShmChannel(link, wire, url, info)


def _explain_client(exc: BaseException, url: str, options: ChannelOptions, budget: float) -> None:
    """Raise the ipcwire error for a plain TimeoutError or OSError (else return); ``budget``
    is the time the handshake had (timeout= or handshake_timeout, the shorter)."""
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


# -- listening --------------------------------------------------------------------------------


class ShmListener(Listener):
    """Accepts shared-memory connections. An acceptor thread takes connections off the
    socket and runs each one's handshake and setup in its own short-lived thread (bounded by
    the handshake timeout), so a slow or hostile client never delays the others.

    At most ``max_ready`` connections (the backlog) wait set up for ``accept()``, and at
    most ``MAX_PENDING`` are being set up; each costs about ten descriptors and a mapping
    here, so the clients behind them wait in the kernel's backlog until ``accept()`` makes
    room, as with ``unix://``."""

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
        self._dropped = False  # collected without close(): the acceptor closes it
        self._cond = threading.Condition()
        self._ready: deque[ShmChannel] = deque()
        self._pending: set[socket.socket] = set()
        self._reserved = 0  # setups past their handshake, each holding a place among _ready
        self._max_ready = max(1, max_ready)
        self._wake_r, self._wake_w = socket.socketpair()
        self._owner = os.getpid()
        sock.setblocking(False)
        # (its twin: a thread holding the listener itself kept it from being collected)
        twin = thread_twin(self)
        self._thread = threading.Thread(target=twin._acceptor, name=f"ipcwire accept {url}")
        self._thread.daemon = True
        self._thread.start()

    def __del__(self) -> None:
        """Collected without :meth:`close`: a ``ResourceWarning``, and the acceptor thread
        closes it (a finalizer must not wait, nor take a lock)."""
        if collected_unclosed(self):
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    def fileno(self) -> int:
        """The listening socket's fd."""
        return self._sock.fileno()

    def accept(self, *, timeout: float | None = None) -> ShmChannel:
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._closed, limit(timeout)):
                raise Timeout(
                    f"no client connected to {self.url} in {timeout} s", endpoint=self.url
                )
            if self._closed:
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
            ch = self._ready.popleft()
            self._cond.notify_all()  # room for the acceptor
            return ch

    def _room(self) -> bool:
        # (handshakes under way count apart: a silent client must not hold a small backlog)
        return self._closed or (len(self._pending) < MAX_PENDING and self._ready_room())

    def _ready_room(self) -> bool:
        """Whether one more client may be set up: those set up and those being set up past
        their handshake stay within the backlog. Without the second, a client whose connect
        had returned but whose channel the setup thread had not queued yet left room for one
        more (1 run in 10 of tests/shm/test_accept_queue.py), and a burst of clients could
        all be set up past it."""
        return len(self._ready) + self._reserved < self._max_ready

    def _acceptor(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._closed and not self._dropped:
                for key, _ in sel.select():
                    if key.data == "wake" or self._closed:
                        return
                    with self._cond:  # (a dropped listener's wake-up is seen within 1 s)
                        while not self._cond.wait_for(self._room, 1.0) and not self._dropped:
                            pass
                    if self._closed or self._dropped:
                        return
                    try:
                        conn, _ = self._sock.accept()
                    except OSError as exc:
                        pause = accept_failed(exc, self.url)
                        if pause and not self._pause(sel, pause):
                            return
                        continue
                    with self._cond:
                        self._pending.add(conn)
                    try:
                        threading.Thread(
                            target=self._setup,
                            args=(conn,),
                            name=f"ipcwire setup {self.url}",
                            daemon=True,
                        ).start()
                    except RuntimeError as exc:  # at the process's thread limit
                        self._no_thread(conn, exc)
        finally:
            sel.close()
            if self._dropped:
                self.close()  # (in this thread: close() does not wait for itself)

    def _no_thread(self, conn: socket.socket, exc: RuntimeError) -> None:
        """No thread could be started for ``conn``'s setup (RLIMIT_NPROC, a cgroup's
        pids.max): refuse that client, say why, and go on accepting. The refusal is one small
        frame (the client reads it after its hello, or after its hello failed); the socket
        buffer takes it without waiting."""
        err = ResourceExhausted(
            f"the server cannot start a thread for this connection ({exc}): it is at its "
            f"limit of processes/threads; try again later",
            endpoint=self.url,
        )
        log.warning(
            "%s refused a client: a thread for its setup could not be started "
            "(%s): this process is at its limit of processes/threads (RLIMIT_NPROC, or the "
            "cgroup's pids.max). Raise that limit, or serve fewer clients at once "
            "(serve(max_channels=))",
            self.url,
            exc,
        )
        try:
            conn.setblocking(False)
            conn.send(self._options.server_handshake("length").reject(err, "busy").send)
        except OSError:
            pass
        conn.close()
        with self._cond:
            self._pending.discard(conn)
            self._cond.notify_all()

    def _pause(self, sel: selectors.BaseSelector, seconds: float) -> bool:
        """Out of descriptors: the client stays in the kernel's backlog and the socket
        readable, so accept nothing for a while instead of spinning. False: closed meanwhile."""
        sel.unregister(self._sock)
        if sel.select(seconds) or self._closed:  # (only the wake-up is watched)
            return False
        sel.register(self._sock, selectors.EVENT_READ, "accept")
        return True

    def _setup(self, conn: socket.socket) -> None:
        options, url = self._options, self.url
        ch: ShmChannel | None = None
        reserved = False
        peer: PeerInfo | None = None
        hs: ServerHandshake | None = None
        told: IpcwireError | None = None  # the refusal the client was sent
        try:
            conn.setblocking(True)
            deadline = time.monotonic() + options.handshake_timeout
            peer, refusal = self._authorize(conn)
            hs = options.server_handshake("length")
            if refusal is not None:
                told = refusal
                log_refused(url, peer, told)  # (before the client can know: then close())
                conn.sendall(hs.reject(refusal, "permission").send)
                raise refusal
            while True:
                body, _ = recv_frame(conn, deadline, 0)
                step = hs.receive(body)
                told = step.error
                if told is not None:
                    log_refused(url, peer, told)
                if step.send:
                    conn.settimeout(max(deadline - time.monotonic(), 0.001))
                    conn.sendall(step.send)
                if step.error is not None:
                    raise step.error
                if step.done:
                    break
            with self._cond:  # a place among the backlog, before the rings cost anything
                if not self._cond.wait_for(
                    lambda: self._closed or self._ready_room(),
                    max(deadline - time.monotonic(), 0.0),
                ):
                    raise Timeout(
                        f"{url} kept a client waiting for accept() past the handshake "
                        f"timeout (the backlog of {self._max_ready} was full)",
                        endpoint=url,
                    )
                if self._closed:
                    raise ChannelClosed(f"listener {url} is closed", endpoint=url)
                self._reserved += 1
                reserved = True
            link = accept_link(
                conn,
                deadline=deadline,
                name=url,
                max_message=options.max_frame,
                **self._shm.ring_kw,
            )
            wire = options.wire()
            wire.send_limit = hs.peer_max_frame
            ch = ShmChannel(link, wire, url, peer)
        except (IpcwireError, OSError) as exc:
            # A refusal was logged before it was sent: a client that reads it may close the
            # listener at once (the log line came after the test's look at the log, CI).
            if told is None:
                log_dropped(url, peer, exc, hs)
            conn.close()
        finally:
            with self._cond:
                self._pending.discard(conn)
                if reserved:
                    self._reserved -= 1
                if ch is not None:
                    if self._closed:
                        ch.close()
                    else:
                        self._ready.append(ch)
                self._cond.notify_all()  # an accept() waiting, or the acceptor for room

    def close(self) -> None:
        if self._closed:
            return
        with self._cond:
            self._closed = True
            pending = list(self._pending)
            ready = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        if os.getpid() != self._owner:
            # A forked child closing its copy: the accepting thread and the pending clients
            # are the parent's (a wake-up byte would stop its thread). Close our fds only.
            for ch in ready:
                ch.close()
            for s in (self._sock, self._wake_r, self._wake_w):
                s.close()
            return
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        for conn in pending:  # wakes their setup threads, which then give up
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for ch in ready:
            ch.close()
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()
        self._cleanup()


def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    mode: int = 0o600,
    allow_uids: Iterable[int] | None = None,
    backlog: int = 128,
    **kw: Any,
) -> ShmListener:
    """Listen for shared-memory connections; see :func:`ipcwire.listen`.

    Options: ``policy``, ``spin_us`` (this side's waiting), ``mode``, ``allow_uids``,
    ``backlog``. The connecting side chooses the ring sizes (``connect(capacity=...)``).

    Raises:
        ConfigurationError: ``capacity=`` given (a ``capacity`` in the URL's query is left
            to the connecting side), or a bad option.
    """
    shm = shm_options(endpoint, kw, listening=True)
    reject_unknown(kw, endpoint, ("mode", "allow_uids", "backlog", "policy", "spin_us"))
    path = socket_path(endpoint, create_dir=True)
    addr = UnixAddress(path, None)
    sock, cleanup = bind_listener(addr, endpoint.url, mode=mode, backlog=backlog)
    return ShmListener(
        sock,
        endpoint.url,
        options,
        shm,
        authorize=make_authorizer(endpoint.url, path, allow_uids),
        cleanup=cleanup,
        max_ready=backlog,
    )
