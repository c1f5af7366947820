"""The blocking listener for stream sockets.

One small acceptor thread per listener multiplexes, with a selector, the listening socket and
every connection still in its handshake (TLS, then ipcwire's), like a kernel backlog that
also authenticates: a client's ``connect()`` completes whether or not the application is inside
``accept()`` at that moment, and ``accept()`` only takes channels that are ready. A client that
sends garbage, the wrong token, half a frame, or nothing at all is dropped after its own error
or handshake deadline, and never delays the clients behind it. At most ``backlog`` ready
channels wait for ``accept()``; beyond that the acceptor stops accepting and the kernel's
backlog holds the rest (backpressure, not unbounded memory). A client whose handshake ends
while they are full waits for its place with the handshake's last reply unsent, so its
``connect()`` does not return before there is room: handshakes under way count apart (a silent
client must not hold a small backlog; ``MAX_HANDSHAKING`` bounds them), and those past theirs
never make the queue longer than ``backlog``.
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import socket
import ssl
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ipcwire._core.framing import LengthPrefixDecoder, NdjsonDecoder
from ipcwire._core.handshake import (
    HANDSHAKE_MAX_FRAME,
    MAX_HANDSHAKING,
    ServerHandshake,
    token_mismatch,
)
from ipcwire._deadline import limit
from ipcwire._droplog import DropLog
from ipcwire._oserror import ACCEPT_RETRY, accept_failed
from ipcwire._stream.blocking import StreamChannel
from ipcwire._stream.transport import SocketStream, TlsStream
from ipcwire.channel import Channel, Listener, PeerInfo, describe_peer
from ipcwire.errors import AddressInUse, ChannelClosed, FrameTooLarge, IpcwireError, Timeout
from ipcwire.options import ChannelOptions

__all__ = [
    "Authorizer",
    "DropLog",
    "StreamListener",
    "collected_unclosed",
    "listening_here",
    "log_text",
    "thread_twin",
]

log = logging.getLogger("ipcwire")

_LINGER = 1.0  # seconds a refused client may keep sending before it is cut off

# Returns who the peer is, and an error when it must be refused (allow_uids...).
Authorizer = Callable[[socket.socket], tuple[PeerInfo, IpcwireError | None]]


def log_text(error: BaseException | str) -> str:
    """What the server's log says about a refused client: the error's text is what the client
    is told; an error may carry more for the server's eyes only (``server_log``: an
    ``allow_uids`` list that a refused uid should not learn, and the fix). Any exception, or
    a text already, is shown as it is."""
    text = getattr(error, "server_log", None)
    return text if isinstance(text, str) else str(error)


_T = TypeVar("_T")


def thread_twin(obj: _T) -> _T:
    """An object of ``obj``'s class that shares ``obj``'s attributes (the same ``__dict__``),
    for the listener's own threads (its acceptor, its loop's server) to hold instead of
    ``obj``. A thread running a bound method of the listener itself kept it alive for ever:
    a listener the program dropped without ``close()`` (``listen(url).accept()`` in a
    notebook cell) was never collected, its socket file or queue stayed, and the next
    ``listen()`` there was refused as "in use" by this very process. With the twin, the
    listener the program holds is collected as any object is, and its ``__del__`` (see
    :func:`warn_dropped`) has its own thread close it; the twin goes when that thread ends.
    """
    twin: _T = object.__new__(type(obj))  # (no __init__: the state is obj's)
    twin.__dict__ = obj.__dict__
    obj.__dict__["_twin_id"] = id(twin)  # (to tell them apart: see collected_unclosed)
    return twin


def collected_unclosed(obj: object) -> bool:
    """For a listener's ``__del__``: whether this is the listener the program held (not its
    twin), collected without ``close()``. Then it is marked ``_dropped``, for its thread to
    close it, and the ``ResourceWarning`` is emitted."""
    state = obj.__dict__
    if state.get("_closed", True) or state.get("_dropped", True):
        return False  # closed (then its twin goes when its thread ends), or never made
    if state.get("_twin_id") == id(obj):
        return False  # the twin, collected while the listener lives: its thread failed
    state["_dropped"] = True
    thread = state.get("_thread")
    if isinstance(thread, threading.Thread):
        _closing[id(thread)] = thread  # (a dict's item: no lock, as a finalizer must)
    warnings.warn(
        f"unclosed listener {state.get('url')!r}: it is closed now, what it listened on "
        "removed; close() it, or use 'with'",
        ResourceWarning,
        stacklevel=2,
        source=obj,
    )
    return True


def listening_here(url: str, pid: int | None) -> AddressInUse | None:
    """The ``AddressInUse`` for an address this very process listens at (``pid`` is ours),
    else None: "pid N (...) is listening there. Stop it" sent the user to stop the program
    they were running."""
    if pid != os.getpid():
        return None
    return AddressInUse(
        f"cannot listen at {url}: this process already listens at {url} (a listener you "
        f"still hold, or one you lost without closing it): close it first",
        pid=pid,
        endpoint=url,
    )


_closing: dict[int, threading.Thread] = {}  # threads closing their collected listeners


def wait_dropped_closed(timeout: float = 2.0) -> None:
    """Wait, ``timeout`` at most, for the listeners collected without ``close()`` to be
    closed by their threads: ``listen()`` calls it first, so that a listener the program
    dropped (then ``gc.collect()`` or its last reference gone) has let go of its address."""
    if not _closing:
        return
    deadline = time.monotonic() + timeout
    for key, thread in list(_closing.items()):
        if thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 0.0))
        if not thread.is_alive():
            _closing.pop(key, None)


@dataclass(eq=False)
class _Pending:
    sock: socket.socket
    peer: PeerInfo
    deadline: float
    hs: ServerHandshake
    decoder: LengthPrefixDecoder | NdjsonDecoder
    tls: bool = False  # TLS handshake still running
    done: bool = field(default=False)
    lingering: bool = False  # refused: reason sent, draining the client's input until it goes
    waiting: bool = False  # past its handshake, waiting for a place among the backlog
    welcome: bytes = b""  # the handshake's last reply, sent when that place comes


class StreamListener(Listener):
    """Accepts stream-socket connections and hands out :class:`StreamChannel` objects."""

    def __init__(
        self,
        sock: socket.socket,
        url: str,
        options: ChannelOptions,
        *,
        authorize: Authorizer,
        ssl_context: ssl.SSLContext | None = None,
        on_close: Callable[[], None] | None = None,
        configure: Callable[[socket.socket], None] | None = None,
        max_ready: int = 128,
    ) -> None:
        self.url = url
        self._sock = sock
        self._options = options
        self._authorize = authorize
        self._ssl = ssl_context
        self._on_close = on_close
        self._configure = configure
        self._closed = False
        self._dropped = False  # collected without close(): the acceptor closes it
        self._droplog = DropLog(url)
        self._cond = threading.Condition()
        self._ready: deque[Channel] = deque()
        self._max_ready = max(1, max_ready)
        # past their handshake while the backlog was full: each gets its place (and its
        # welcome) in turn as accept() makes room; the acceptor accepts no one meanwhile
        self._waiting: deque[_Pending] = deque()
        self._pending: dict[int, _Pending] = {}
        self._retry_at = 0.0  # out of fds: accept nothing before this (monotonic) time
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        sock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(sock, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(
            target=thread_twin(self)._run, name=f"ipcwire acceptor {url}", daemon=True
        )
        self._thread.start()

    def __del__(self) -> None:
        """Collected without :meth:`close` (only the listener the program held is: the
        acceptor thread holds its twin): a ``ResourceWarning``, and the acceptor closes it
        (a finalizer must not wait, nor take a lock: it runs wherever the collector runs)."""
        if collected_unclosed(self):
            self._wake()

    def _dispatch(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, _ in events:
            if self._closed:
                return
            if key.data is None:
                self._accept_new()
            elif key.data == "wake":
                self._drain_wake()
            else:
                self._advance(key.data)

    def fileno(self) -> int:
        """The listening socket's fd."""
        return self._sock.fileno()

    def accept(self, *, timeout: float | None = None) -> Channel:
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._closed, limit(timeout)):
                raise Timeout(
                    f"no client connected to {self.url} within {timeout} s", endpoint=self.url
                )
            if self._closed:
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
            was_full = len(self._ready) >= self._max_ready
            ch = self._ready.popleft()
        if was_full:
            self._wake()
        return ch

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _run(self) -> None:
        """The acceptor thread: accept, handshake, hand over; until closed."""
        listening = True
        try:
            while not self._closed and not self._dropped:
                self._let_in()
                now = time.monotonic()
                full = self._full() or now < self._retry_at
                if full and listening:
                    self._sel.unregister(self._sock)
                    listening = False
                elif not full and not listening:
                    self._sel.register(self._sock, selectors.EVENT_READ, None)
                    listening = True
                self._expire(now)
                wait = None
                if self._pending:
                    wait = max(min(p.deadline for p in self._pending.values()) - now, 0.0)
                if now < self._retry_at:
                    wait = min(wait if wait is not None else ACCEPT_RETRY, self._retry_at - now)
                due = self._droplog.due()
                if due is not None:
                    wait = max(min(wait if wait is not None else math.inf, due - now), 0.0)
                # (in a method of its own: a loop variable left here held the last pending
                # connection, and its buffer, until the next event)
                self._dispatch(self._sel.select(wait))
                self._droplog.flush()
        except Exception:  # pragma: no cover - a bug here must not pass silently
            log.exception("the acceptor of %s failed", self.url)
        finally:
            for p in list(self._pending.values()):
                self._forget(p)
                p.sock.close()
            while self._waiting:
                self._waiting.popleft().sock.close()
            self._droplog.flush(final=True)
            if self._dropped:
                self.close()  # (in this thread: close() does not wait for itself)

    def _full(self) -> bool:
        """Whether the backlog has no place for one more client (then nobody is accepted)."""
        with self._cond:
            return len(self._ready) >= self._max_ready or bool(self._waiting)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except OSError:
            pass

    def _accept_new(self) -> None:
        for _ in range(64):  # bounded: let pending handshakes progress too
            if self._full():  # (the kernel's backlog holds the rest)
                return
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._closed:
                    return
                self._retry_at = time.monotonic() + accept_failed(exc, self.url)
                return
            self._start(conn)

    def _start(self, conn: socket.socket) -> None:
        if len(self._pending) >= MAX_HANDSHAKING:
            oldest = min(self._pending.values(), key=lambda q: q.deadline)
            self._drop(oldest, f"was the oldest of {MAX_HANDSHAKING} clients in their handshake")
        try:
            if self._configure is not None:
                self._configure(conn)
            peer, refusal = self._authorize(conn)
        except OSError as exc:
            conn.close()
            self._droplog.log(
                logging.INFO,
                "dropped: its socket failed at once",
                "%s: dropped a client: %s",
                self.url,
                exc,
            )
            return
        opts = self._options
        hs = opts.server_handshake(goodbye=True)
        dec = opts.wire().decoder(small=True)  # grows with what the client sends
        dec.max_frame = HANDSHAKE_MAX_FRAME
        p = _Pending(conn, peer, time.monotonic() + opts.handshake_timeout, hs, dec)
        if refusal is not None:
            self._refuse(p, hs.reject(refusal, "permission").send, refusal)
            return
        conn.setblocking(False)
        if self._ssl is not None:
            try:
                p.sock = self._ssl.wrap_socket(
                    conn, server_side=True, do_handshake_on_connect=False
                )
            except (OSError, ValueError) as exc:
                conn.close()
                self._droplog.log(
                    logging.INFO,
                    "dropped: TLS setup failed",
                    "%s: TLS setup failed: %s",
                    self.url,
                    exc,
                )
                return
            p.tls = True
        elif not hs.needed:
            self._finish(p)
            return
        self._pending[p.sock.fileno()] = p
        self._sel.register(p.sock, selectors.EVENT_READ, p)
        if p.tls:
            self._advance(p)

    def _advance(self, p: _Pending) -> None:
        if p.lingering:
            self._linger(p)
            return
        if p.waiting:
            # a client waiting for its welcome sends nothing: it went (or broke the protocol)
            self._waiting.remove(p)
            self._unwatch(p)
            self._drop(p, "went away while it waited for a place in the full backlog")
            return
        try:
            if p.tls:
                assert isinstance(p.sock, ssl.SSLSocket)
                try:
                    p.sock.do_handshake()
                except ssl.SSLWantReadError:
                    return
                p.tls = False
                if not p.hs.needed:
                    self._finish(p)
                    return
            while not p.done:
                frame = p.decoder.next_frame()
                if frame is None:
                    try:
                        n = p.sock.recv_into(p.decoder.get_buffer())
                    except (BlockingIOError, ssl.SSLWantReadError):
                        return
                    if n == 0:
                        if p.hs.awaiting_proof:  # an older client that refused our proof
                            self._refused_us(p)
                            return
                        self._drop(p, "closed the connection during the handshake")
                        return
                    p.decoder.buffer_updated(n)
                    continue
                step = p.hs.receive(frame)
                if step.error is not None:
                    self._refuse(p, step.send, step.error)
                    return
                if step.done:
                    self._finish(p, step.send)
                    return
                if step.send:
                    p.sock.sendall(step.send)
        except FrameTooLarge as exc:
            refused = p.hs.misframed(exc.header)
            if refused is not None and refused.error is not None:
                self._refuse(p, refused.send, refused.error)
                return
            self._drop(p, "sent an oversized handshake frame (not an ipcwire client?)")
        except (OSError, ssl.SSLError) as exc:
            self._drop(p, "failed during the handshake", f": {exc}")
        except Exception as exc:  # a bug, or bytes nobody foresaw: that client alone goes
            log.exception("%s: a client's handshake failed unexpectedly", self.url)
            self._drop(p, "broke the handshake", f" ({type(exc).__name__}: {exc})")

    def _finish(self, p: _Pending, welcome: bytes = b"") -> None:
        """``p`` is past its handshake: into the backlog if it has a place, else it waits."""
        p.done = True
        self._forget(p)
        p.welcome = welcome
        if self._full():
            p.waiting = True
            self._waiting.append(p)
            self._sel.register(p.sock, selectors.EVENT_READ, p)  # (to see it go)
            return
        self._hand_over(p)

    def _let_in(self) -> None:
        """Give the clients waiting past their handshake the places accept() made."""
        while self._waiting:
            with self._cond:
                if len(self._ready) >= self._max_ready:
                    return
            p = self._waiting.popleft()
            self._unwatch(p)
            self._hand_over(p)

    def _unwatch(self, p: _Pending) -> None:
        p.waiting = False
        try:
            self._sel.unregister(p.sock)
        except (KeyError, ValueError):
            pass

    def _hand_over(self, p: _Pending) -> None:
        if p.welcome:
            try:
                p.sock.sendall(p.welcome)  # small, into an empty buffer: never blocks
            except (OSError, ssl.SSLError) as exc:
                self._drop(p, "was gone before its handshake completed", f": {exc}")
                return
        p.decoder.grow()
        p.decoder.max_frame = self._options.max_frame
        if p.hs.goodbye and isinstance(p.decoder, LengthPrefixDecoder):
            p.decoder.goodbye = True
        wire = self._options.wire()
        wire.send_limit = p.hs.peer_max_frame
        stream = TlsStream(p.sock) if isinstance(p.sock, ssl.SSLSocket) else SocketStream(p.sock)
        ch = StreamChannel(stream, wire, self.url, peer=p.peer, decoder=p.decoder)
        with self._cond:
            self._ready.append(ch)
            self._cond.notify()

    def _refuse(self, p: _Pending, reply: bytes, error: IpcwireError) -> None:
        """Tell the client why, then close gracefully ("lingering close"): half-close, and
        read and discard what it still sends until it closes or _LINGER passes, so that a
        client still writing gets the reason instead of a reset that discards it."""
        who = describe_peer(p.peer) or "?"
        self._droplog.log(
            logging.WARNING,
            f"refused ({type(error).__name__})",
            "%s refused a client (%s): %s",
            self.url,
            who,
            log_text(error),
        )
        try:
            p.sock.setblocking(False)
            if reply:
                p.sock.send(reply)  # small, into an empty buffer: never blocks the acceptor
            p.sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            self._forget(p)
            p.sock.close()
            return
        p.lingering = True
        p.deadline = time.monotonic() + _LINGER
        fd = p.sock.fileno()
        if fd not in self._pending:
            self._pending[fd] = p
            self._sel.register(p.sock, selectors.EVENT_READ, p)

    def _linger(self, p: _Pending) -> None:
        try:
            while p.sock.recv(65536):
                pass
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except (OSError, ssl.SSLError):
            pass
        self._forget(p)
        p.sock.close()

    def _refused_us(self, p: _Pending) -> None:
        """The client hung up at the token proof: it has another token (a warning, as a
        client with a wrong token is)."""
        pid = f" (pid {p.peer.pid} uid {p.peer.uid})" if p.peer.pid else ""
        self._droplog.log(
            logging.WARNING,
            "refused: it has another token",
            "%s",
            token_mismatch(f"the client of {self.url}{pid}"),
        )
        self._forget(p)
        p.sock.close()

    def _drop(self, p: _Pending, why: str, detail: str = "") -> None:
        who = describe_peer(p.peer) or "a client"
        self._droplog.log(
            logging.INFO,
            f"dropped: it {why}",
            "%s dropped %s: it %s%s",
            self.url,
            who,
            why,
            detail,
        )
        self._forget(p)
        p.sock.close()

    def _forget(self, p: _Pending) -> None:
        try:
            fd = p.sock.fileno()
        except (OSError, ValueError):
            return
        if self._pending.pop(fd, None) is not None:
            try:
                self._sel.unregister(p.sock)
            except (KeyError, ValueError):
                pass

    def _expire(self, now: float) -> None:
        for p in [p for p in self._pending.values() if p.deadline <= now]:
            if p.lingering:
                self._forget(p)
                p.sock.close()
                continue
            self._drop(
                p, f"did not finish the handshake within {self._options.handshake_timeout} s"
            )

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            ready = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)
        for ch in ready:
            ch.close()
        self._sel.close()
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._on_close is not None:
            self._on_close()
