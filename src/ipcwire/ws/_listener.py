"""The blocking WebSocket listener: an acceptor thread, one handshake thread per client."""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import ssl as ssl_module
import threading
import time
from collections import deque
from typing import Any, Final

from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.sync.server import Server, ServerConnection

from ipcwire._core.handshake import HANDSHAKE_MAX_FRAME
from ipcwire._deadline import limit
from ipcwire._oserror import accept_failed, translate
from ipcwire._tls import SharedTls
from ipcwire.channel import Channel, Listener, describe_peer
from ipcwire.ws._admission import (
    POLICY_VIOLATION,
    Admission,
    ListenerCore,
    ServerSettings,
    admit,
    finish_admission,
)
from ipcwire.ws._channel import WsChannel
from ipcwire.ws._closing import SyncCloseBound
from ipcwire.ws._common import ERROR_HEADER
from ipcwire.ws._fast import FastServerProtocol
from ipcwire.ws._log import ws_log
from ipcwire.ws._queue import fast_assembler
from ipcwire.ws._sockets import Authorizer
from ipcwire.ws._writer import WriteBuffer

__all__ = ["WsListener"]

log = logging.getLogger("ipcwire")

BUSY_RETRY_AFTER: Final = 1  # seconds, in the 503 to a client no thread could start for
_LINGER: Final = 5.0  # seconds a client answered 503 has to read it and close
_LINGER_MAX: Final = 64  # clients lingering at once (beyond: the oldest is closed)


class ServerConn(SyncCloseBound, ServerConnection):
    """A server connection that remembers the admission decided for it (receives through
    ``ipcwire.ws._fast``; a closing handshake the peer never finishes is cut, ``_closing``)."""

    admission: Admission | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recv_messages = fast_assembler(self.recv_messages)


class WsListener(ListenerCore, Listener):
    """Accepts WebSocket clients and hands out :class:`WsChannel` objects.

    Like the stream listeners, it completes handshakes whether or not the application is in
    ``accept()`` (a backlog that authenticates): one acceptor thread takes connections and
    runs each one's opening handshake in a short-lived thread, so a slow or hostile client
    never delays the others. At most ``backlog`` channels wait (ready or in their handshake);
    beyond that the acceptor stops accepting and the kernel's backlog holds the rest.
    """

    def __init__(
        self,
        sock: socket.socket,
        settings: ServerSettings,
        *,
        authorize: Authorizer,
        ssl_context: ssl_module.SSLContext | None,
        on_close: Any,
        max_ready: int = 128,
    ) -> None:
        super().__init__(settings, authorize=authorize, on_close=on_close)
        self._sock = sock
        self._owner = os.getpid()  # a forked child's copy must not cut its parent's clients
        self._ssl = ssl_context
        self._cond = threading.Condition()
        self._ready: deque[WsChannel] = deque()
        self._inflight = 0
        # each handshake thread and its client's socket: close() cuts these clients off and
        # waits for their threads (bounded), as the stream listeners do
        self._opening: dict[threading.Thread, socket.socket] = {}
        self._max_ready = max(1, max_ready)
        self._retry_at = 0.0  # out of descriptors: accept nothing until then (monotonic)
        # The library's connections ask their server whether it is closing (then they refuse
        # handshakes in flight with 503); this object only serves that question.
        self._server = Server(sock, lambda s, a: None)
        self._server.shutdown_watcher.close()
        self._server.shutdown_notifier.close()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        sock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._refusals = _Refusals(self._sel)  # clients answered 503: no thread for them
        opts = settings.options
        self._extensions = (
            [ServerPerMessageDeflateFactory()] if settings.compression == "deflate" else None
        )
        self._max_frame = opts.max_frame
        self._thread = threading.Thread(
            target=self._run, name=f"ipcwire ws acceptor {self.url}", daemon=True
        )
        self._thread.start()

    def fileno(self) -> int:
        """The listening socket's fd."""
        return self._sock.fileno()

    def accept(self, *, timeout: float | None = None) -> Channel:
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._closed, limit(timeout)):
                raise self._accept_timeout(timeout)
            if self._closed:
                raise self._closed_error()
            was_full = self._full()
            ch = self._ready.popleft()
        if was_full:
            self._wake()
        return ch

    def _full(self) -> bool:
        return len(self._ready) + self._inflight >= self._max_ready

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _run(self) -> None:
        """The acceptor thread: take connections while there is room, until closed."""
        listening = False
        try:
            while not self._closed:
                with self._cond:
                    full = self._full()
                pause = self._retry_at - time.monotonic()
                want = not full and pause <= 0
                if listening and not want:
                    self._sel.unregister(self._sock)
                    listening = False
                elif want and not listening:
                    self._sel.register(self._sock, selectors.EVENT_READ, "listen")
                    listening = True
                due = self._refusals.due()
                waits = [w for w in (pause if pause > 0 else None, due) if w is not None]
                for key, _ in self._sel.select(min(waits) if waits else None):
                    if self._closed:
                        break
                    if key.data == "listen":
                        self._accept_new()
                    elif key.data == "refused":
                        self._refusals.readable(key.fileobj)  # type: ignore[arg-type]
                    else:
                        try:
                            while self._wake_r.recv(512):
                                pass
                        except OSError:
                            pass
        except Exception:  # pragma: no cover - a bug here must not pass silently
            log.exception("the acceptor of %s failed", self.url)

    def _accept_new(self) -> None:
        for _ in range(64):
            with self._cond:
                if self._full():
                    return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._closed:
                    return
                self._retry_at = time.monotonic() + accept_failed(exc, self.url)
                return
            conn.setblocking(True)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms stalls
            t = threading.Thread(
                target=self._handshake,
                args=(conn,),
                name=f"ipcwire ws handshake {self.url}",
                daemon=True,
            )
            with self._cond:
                self._inflight += 1
                self._opening[t] = conn
            try:
                t.start()
            except RuntimeError as exc:  # at the process's thread limit
                with self._cond:
                    self._inflight -= 1
                    del self._opening[t]
                self._busy(conn, exc)
                self._no_thread("its handshake", exc)

    def _busy(self, conn: socket.socket, exc: RuntimeError) -> None:
        """Answer a client that no handshake thread could be started for (see
        :class:`_Refusals`); over TLS nothing can be said without a handshake (and so a
        thread): the connection is closed."""
        if self._ssl is not None:
            conn.close()
            return
        text = (
            f"the server cannot start a thread for this connection ({exc}): it is at its "
            f"limit of processes/threads; try again later"
        )
        body = f"{self.url}: {text}\n".encode()
        refusal = json.dumps({"ipcwire": 1, "error": text, "code": "busy"})
        head = (
            f"HTTP/1.1 503 Service Unavailable\r\nServer: ipcwire\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"Retry-After: {BUSY_RETRY_AFTER}\r\n{ERROR_HEADER}: {refusal}\r\n"
            f"Connection: close\r\n\r\n"
        )
        self._refusals.add(conn, head.encode() + body)

    def _no_thread(self, what: str, exc: RuntimeError) -> None:
        """Say that a client was dropped because a thread for ``what`` could not start."""
        log.warning(
            "%s dropped a client: a thread for %s could not be started (%s): this "
            "process is at its limit of processes/threads (RLIMIT_NPROC, or the cgroup's "
            "pids.max). Raise that limit, or serve fewer clients at once "
            "(serve(max_channels=))",
            self.url,
            what,
            exc,
        )

    def _wrapped(self, sock: socket.socket) -> None:
        """The handshake thread's client socket is now ``sock`` (TLS wrapped it)."""
        with self._cond:
            self._opening[threading.current_thread()] = sock
            if self._closed:  # close() cut the socket it replaces
                _cut(sock)

    def _handshake(self, sock: socket.socket) -> None:
        ch: WsChannel | None = None
        try:
            ch = self._admit(sock)
        except OSError as exc:  # e.g. out of descriptors for the connection's own socketpair
            log.warning("%s", translate(exc, self.url, "opening a connection on"))
            with self._cond:
                current = self._opening.get(threading.current_thread(), sock)
            current.close()  # (this thread owns it; the client sees the end of the stream)
        except RuntimeError as exc:  # a thread of the connection's own could not start
            self._no_thread("its connection", exc)
            with self._cond:
                current = self._opening.get(threading.current_thread(), sock)
            _cut(current)  # (ends the connection's reading thread, if that one started)
            current.close()
        except Exception:  # pragma: no cover - a bug here must not pass silently
            log.exception("%s: a handshake failed", self.url)
        with self._cond:
            self._opening.pop(threading.current_thread(), None)
            self._inflight -= 1
            if ch is not None and not self._closed:
                self._ready.append(ch)
                ch = None
                self._cond.notify()
        if ch is not None:
            ch.close()
        self._wake()  # room again: the acceptor may listen again

    def _admit(self, sock: socket.socket) -> WsChannel | None:
        """One client's TLS and WebSocket handshakes (in its own thread): its channel, or None
        when it was refused or failed."""
        settings = self._settings
        opts = settings.options
        deadline = time.monotonic() + opts.handshake_timeout
        peer, refusal = self._authorize(sock)
        who = peer.address or (f"pid {peer.pid}" if peer.pid else "a client")
        if self._ssl is not None:
            try:
                sock.settimeout(opts.handshake_timeout)
                sock = self._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                self._wrapped(sock)
                sock.do_handshake()
            except (OSError, ValueError) as exc:
                log.info("%s: TLS handshake with %s failed: %s", self.url, who, exc)
                sock.close()
                return None
            sock = SharedTls(sock)  # type: ignore[assignment] # read by one thread, written by others
        protocol = FastServerProtocol(
            extensions=self._extensions,
            max_size=self._max_frame,
            logger=ws_log(self.url, listener=True, peer=describe_peer(peer) or who),
        )
        if opts.token is not None:  # the first message may be the token: small until then
            protocol.limit_first_message(HANDSHAKE_MAX_FRAME)
        conn = ServerConn(
            WriteBuffer(sock),  # (a socket whose writes never wait)
            protocol,
            self._server,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            close_timeout=settings.close_timeout,
        )

        def process_request(c: ServerConnection, request: Request) -> Response | None:
            adm = admit(settings, request.path, request.headers, refusal=refusal)
            conn.admission = adm
            return self._http_answer(c, adm, who)

        def process_response(c: ServerConnection, r: Request, response: Response) -> None:
            self._add_welcome(conn.admission, response)
            if conn.admission is not None and not conn.admission.pending:
                protocol.lift_first_limit()  # (before the 101 lets the client send)

        try:
            conn.handshake(process_request, process_response, "ipcwire", opts.handshake_timeout)
        except Exception as exc:
            log.info("%s: handshake with %s failed: %s", self.url, who, exc)
            conn.close_socket()
            return None
        adm = conn.admission
        if conn.protocol.state is not OPEN or adm is None:
            conn.close_socket()
            return None
        if adm.pending and not self._check_first_message(conn, adm, deadline, who):
            return None
        conn.start_keepalive()
        return WsChannel(
            conn,
            self.url,
            opts.codec,
            max_frame=opts.max_frame,
            send_limit=adm.send_limit,
            peer=peer,
            close_timeout=settings.close_timeout,
        )

    def _check_first_message(
        self, conn: ServerConnection, adm: Admission, deadline: float, who: str
    ) -> bool:
        try:
            first = conn.recv(max(deadline - time.monotonic(), 0.001), decode=False)
        except TimeoutError:
            conn.close(POLICY_VIOLATION, self._no_token(who))
            return False
        except ConnectionClosed:
            return False
        reply, err = finish_admission(adm, first, self._settings.options.token)
        try:
            if reply:
                conn.send(reply, text=True)
            if err is not None:
                conn.close(POLICY_VIOLATION, self._refused(who, err))
                return False
        except ConnectionClosed:
            return False
        return True

    def close(self) -> None:
        if self._closed:
            return
        if os.getpid() != self._owner:
            self._close_copy()
            return
        with self._cond:
            self._closed = True
            ready = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        self._server.socket_closed.set()  # handshakes still in flight get 503
        self._wake()
        deadline = time.monotonic() + 5
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
        with self._cond:  # (the acceptor starts no more handshakes)
            opening = list(self._opening.items())
        for _, sock in opening:  # clients in their handshake: cut off, never handed out
            _cut(sock)
        for t, _ in opening:
            if t is not threading.current_thread():
                t.join(max(deadline - time.monotonic(), 0))
        for ch in ready:
            ch.close()
        self._refusals.close()  # (the acceptor has stopped)
        self._sel.close()
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._on_close is not None:
            self._on_close()

    def _close_copy(self) -> None:
        """Close a forked child's copy: the acceptor and handshake threads are the parent's
        (they do not run here), and a shutdown(2) of a client in its handshake, or a wake-up
        written, would reach the parent's. Our descriptors only."""
        self._closed = True
        ready = list(self._ready)
        self._ready.clear()
        for ch in ready:
            ch.close()  # (a channel's close knows it is a copy)
        for sock in list(self._opening.values()):
            sock.close()
        self._opening.clear()
        self._refusals.close()
        self._sel.close()
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._on_close is not None:
            self._on_close()  # (it leaves the parent's socket file alone)


def _cut(sock: socket.socket) -> None:
    """End a connection's I/O at once (its reader sees the end of the stream); the thread
    that owns the socket closes it."""
    try:  # (the socket's own, not TLS's: that would pull OpenSSL from under its owner)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # not connected any more, or closed
        pass


class _Refusals:
    """Clients the acceptor answers itself, without a thread (HTTP 503, Retry-After, a body
    saying why, and ipcwire's refusal, code "busy" as shm's listener sends, that ipcwire's
    client raises). Each is answered once its request has come (read and dropped: answering
    before the client has sent it would end the connection under the client's request),
    then read until it closes: closing with its data unread would reset the connection, and
    a reset may discard the answer before the client reads it. At most ``_LINGER`` seconds
    each, and ``_LINGER_MAX`` at once (beyond that the oldest is closed). Used by the
    acceptor thread only."""

    def __init__(self, sel: selectors.BaseSelector) -> None:
        self._sel = sel
        # each client: (when it is closed, monotonic; the answer not yet sent, or None; the
        # last bytes of its request so far, to find the end of its head across reads)
        self._conns: dict[socket.socket, tuple[float, bytes | None, bytes]] = {}

    def add(self, conn: socket.socket, answer: bytes) -> None:
        while len(self._conns) >= _LINGER_MAX:
            self._end(next(iter(self._conns)))
        try:
            conn.setblocking(False)
            self._sel.register(conn, selectors.EVENT_READ, "refused")
        except (OSError, ValueError):
            conn.close()
            return
        self._conns[conn] = (time.monotonic() + _LINGER, answer, b"")

    def readable(self, conn: socket.socket) -> None:
        due, answer, tail = self._conns[conn]
        got = bytearray(tail)
        try:
            while chunk := conn.recv(4096):
                got += chunk
        except (BlockingIOError, InterruptedError):
            chunk = b"-"  # (not the end)
        except OSError:
            chunk = b""
        if answer is not None and (b"\r\n\r\n" in got or not chunk):
            try:
                conn.send(answer)  # (a fresh socket's buffer takes it at once)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                chunk = b""
            answer = None
        self._conns[conn] = (due, answer, bytes(got[-3:]))
        if not chunk:
            self._end(conn)

    def due(self) -> float | None:
        """Close the clients whose time is up; seconds until the next is due (None: none)."""
        if not self._conns:
            return None
        now = time.monotonic()
        for conn, (due, _, _) in list(self._conns.items()):
            if due <= now:
                self._end(conn)
        return min((due - now for due, _, _ in self._conns.values()), default=None)

    def _end(self, conn: socket.socket) -> None:
        del self._conns[conn]
        self._sel.unregister(conn)
        conn.close()

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns.clear()
