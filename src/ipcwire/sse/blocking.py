"""Server-Sent Events, blocking driver.

The client is plain sockets in the caller's thread (no asyncio): ``recv`` reads the stream,
and when the connection drops it reconnects (from within ``recv``, bounded by its timeout)
and resumes with ``Last-Event-ID``.

The listener serves HTTP with aiohttp, which needs an event loop: it runs its own loop in one
background thread, the *server*. The caller's calls never run asyncio: ``send`` appends the
event to the stream's buffer under a lock and wakes the connection's writer in that thread;
``accept`` takes new streams from a thread-safe queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._deadline import limit
from ipcwire._stream.retry import backoff_delays
from ipcwire._turns import take_turn
from ipcwire.channel import Channel, Listener
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    Timeout,
)
from ipcwire.options import ChannelOptions
from ipcwire.sse._client import (
    DEFAULT_RETRY,
    DEFAULT_RETRY_FOR,
    FATAL,
    ClientCore,
    Raise,
)
from ipcwire.sse._client_channel import ClientChannelBase, client_core
from ipcwire.sse._common import (
    ServerChannelBase,
    batches,
    bind,
    new_server,
    one_way_error,
    warn_if_plaintext,
)
from ipcwire.sse._events import b64encode
from ipcwire.sse._release import release_blocking
from ipcwire.sse._server import SHUTDOWN_TIMEOUT, SseServer

__all__ = ["SseClientChannel", "SseListener", "SseServerChannel", "connect", "listen"]

log = logging.getLogger("ipcwire")


class SseClientChannel(ClientChannelBase, Channel):
    """The receiving end of an event stream (blocking): messages from the server."""

    def __init__(
        self,
        core: ClientCore,
        *,
        connect_timeout: float,
        ssl: ssl_module.SSLContext | None,
        server_hostname: str | None,
    ) -> None:
        super().__init__(
            core,
            connect_timeout=connect_timeout,
            ssl=ssl,
            server_hostname=server_hostname,
            clock=time.monotonic,
        )
        self._sock: socket.socket | None = None
        self._sock_timeout: float | None = -1.0
        self._buf = bytearray(65536)
        self._view = memoryview(self._buf)
        self._recv_lock = threading.Lock()
        self._wake = threading.Event()

    # -- one connection ---------------------------------------------------------------------
    def _open(self, deadline: float) -> None:
        """Connect, send the request, read the response head; raises typed errors."""
        addr = self._core.addr
        try:
            sock = socket.create_connection(
                (addr.host, addr.port), timeout=max(deadline - time.monotonic(), 0.001)
            )
        except OSError as exc:
            raise self._connect_error(exc) from exc
        self._sock = sock  # close() shuts it down: a handshake that hangs ends at once
        if self._closed:
            self._drop_socket()
            raise self._closed_error()
        if (tls := self._tls()) is not None:
            try:
                sock = tls[0].wrap_socket(
                    sock, server_hostname=tls[1], do_handshake_on_connect=False
                )
                self._sock = sock
                if self._closed:
                    self._drop_socket()
                    raise self._closed_error()
                sock.do_handshake()
            except OSError as exc:
                self._drop_socket()
                raise self._connect_error(exc) from exc
        try:
            sock.sendall(self._core.request())
            buf = bytearray()
            answer = None
            while answer is None:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                answer = self._answer(buf, sock.recv(65536))
        except OSError as exc:
            self._drop_socket()
            raise self._answer_error(exc) from exc
        except BaseException:
            self._drop_socket()
            raise
        open_, rest = answer
        if not open_:
            self._drop_socket()
            return
        try:
            peername = sock.getpeername()
        except OSError:
            peername = None
        self._sock_timeout = -1.0
        self._opened(peername, rest)

    def _drop_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if os.getpid() == self._owner:  # (a forked child's copy: its parent's connection)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            sock.close()

    _drop = _drop_socket  # how ClientChannelBase lets the connection go

    # -- receiving --------------------------------------------------------------------------
    def recv(self, *, timeout: float | None = None) -> Any:
        queue = self._queue
        if queue and not self._closed:
            # The usual case: a message parsed already. Popping is atomic, so this needs no
            # lock (which guards reading the socket); an error goes back for _recv to raise.
            try:
                item = queue.popleft()
            except IndexError:
                pass  # another thread took it
            else:
                if type(item) is not Raise:
                    return item
                queue.appendleft(item)
        left = self._take_turn(timeout)
        try:
            return self._recv(left, timeout)
        finally:
            self._recv_lock.release()

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        left = self._take_turn(timeout)
        try:
            return self._more([self._recv(left, timeout)], max_messages)
        finally:
            self._recv_lock.release()

    def _take_turn(self, timeout: float | None) -> float | None:
        """The receive lock, within ``timeout`` (receives take turns: :func:`take_turn`)."""
        return take_turn(self._recv_lock, timeout, self.url)

    def _recv(self, timeout: float | None, said: float | None) -> Any:
        """The next message within ``timeout`` (what is left of the caller's, ``said``: for
        the messages)."""
        core = self._core
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise self._closed_error()
            if core.queue:
                try:
                    return core.pop()
                except IndexError:
                    continue  # a recv() in another thread took it
            if core.final is not None:
                raise core.final
            if self._sock is None:
                self._reconnect(deadline, said)
            else:
                self._read(deadline, said)

    def _read(self, deadline: float | None, timeout: float | None) -> None:
        sock = self._sock
        assert sock is not None
        silent_at = self._silent_at()
        if deadline is None:
            # the idle limit itself, not the time left of it: the socket's timeout then stays
            # the same from one read to the next (no settimeout() per read); a silence is
            # noticed at most that much after this read began
            wait = self._core.idle_limit
        else:
            now = time.monotonic()
            wait = max(deadline - now, 0.0)
            if silent_at is not None and silent_at - now < wait:
                wait = max(silent_at - now, 0.0)
        if wait != self._sock_timeout:
            sock.settimeout(wait)
            self._sock_timeout = wait
        try:
            n = sock.recv_into(self._buf)
        except (BlockingIOError, TimeoutError):
            if silent_at is not None and time.monotonic() >= silent_at:
                self._silence()
                return
            raise self._recv_timeout(timeout) from None
        except OSError as exc:
            if self._closed:
                raise self._closed_error() from None
            self._connection_lost(exc)
            return
        self._received(self._view[:n])

    def _reconnect(self, deadline: float | None, timeout: float | None) -> None:
        now = time.monotonic()
        wait = self._attempt_wait(now, deadline, timeout)
        if wait > 0:
            self._wake.wait(wait)
            return
        try:
            self._open(self._attempt_deadline(now, deadline))
        except FATAL as exc:
            self._core.final = exc
            raise
        except (ChannelBroken, Timeout) as exc:
            self._attempt_failed(exc)

    # -- the rest ---------------------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        raise one_way_error(self.url, closed=self._closed)

    def close(self) -> None:
        """Close the channel and tell the server this client is done with its stream (an
        HTTP DELETE, on a connection of its own: the server ends the stream at once instead
        of keeping it for a resume). That takes well under a millisecond on loopback, and at
        most ``RELEASE_TIMEOUT`` (1 s) when the server does not answer; it never raises."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
            except OSError:
                pass
        with self._recv_lock:
            self._drop_socket()
        release = self._release()
        if release is not None:
            release_blocking(release)


def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    headers: Mapping[str, str] | None = None,
    last_event_id: str | None = None,
    allow_gaps: bool = False,
    retry: float = DEFAULT_RETRY,
    retry_for: float = DEFAULT_RETRY_FOR,
    **kw: Any,
) -> SseClientChannel:
    """Open an event stream for reading; see :func:`ipcwire.connect` and the docs page.

    Raises:
        ConnectionRefused: nothing listens (after ``reconnect`` seconds, if given), or no
            stream at that path.
        AuthenticationFailed, PermissionDenied (Origin refused), HandshakeError (codec),
        RemoteProtocolError (not an event stream), Timeout, ConfigurationError, InvalidURL.
    """
    core, limit = client_core(
        endpoint,
        options,
        kw,
        timeout=timeout,
        headers=headers,
        last_event_id=last_event_id,
        allow_gaps=allow_gaps,
        retry=retry,
        retry_for=retry_for,
    )
    ch = SseClientChannel(core, connect_timeout=limit, ssl=ssl, server_hostname=server_hostname)
    retry_until = time.monotonic() + reconnect if reconnect else None
    delays = backoff_delays()
    while True:
        try:
            ch._open(time.monotonic() + limit)
            return ch
        except ConnectionRefused:
            if retry_until is None or time.monotonic() >= retry_until:
                raise
            time.sleep(min(next(delays), max(retry_until - time.monotonic(), 0)))


# -- the serving side -----------------------------------------------------------------------
class SseServerChannel(ServerChannelBase, Channel):
    """The sending end of one client's stream (blocking)."""

    def _close_after(self, exc: BaseException | None) -> None:
        self._note_failure(exc)
        self.close()

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if (
            type(obj) is bytes
            and self._plain
            and len(obj) <= self._limit
            and not self._closed
            and self._stream.send_one(b64encode(obj))
        ):  # the usual case, inline: bytes through the bytes codec, base64 in the event
            self._bytes_sent += len(obj)
            return
        payload = self._encode_payload(obj)
        if not self._send_now(payload):
            data, size = self._data(payload)
            self._append([data], size, timeout)

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        datas, size = self._encode_all(objs)
        if datas:
            self._append(datas, size, timeout)

    def _append(self, datas: list[bytes], size: int, timeout: float | None) -> None:
        s = self._stream
        deadline = None if timeout is None else time.monotonic() + timeout
        for batch, nbytes in batches(datas, s.max_events, s.max_bytes):
            with s.lock:
                self._check_open()
                while not s.has_room(len(batch), nbytes):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise self._full(timeout)
                    s.sleepers += 1
                    try:
                        s.room.wait(remaining)
                    finally:
                        s.sleepers -= 1
                    self._check_open()
                wake = s.append(batch)
            if wake is not None:
                wake()
        self._bytes_sent += size

    def recv(self, *, timeout: float | None = None) -> Any:
        """Wait for the stream to end: nothing is received on this side of an event stream.

        Raises:
            EndOfChannel: its client closed it (``for _ in stream: pass`` ends there).
            ChannelBroken: it is gone otherwise (its client did not come back within
                ``resume_window=``).
            Timeout: it is still open after ``timeout`` seconds.
            ChannelClosed: this side, or the listener, is closed (from another thread too).
        """
        s = self._stream
        deadline = None if timeout is None else time.monotonic() + timeout
        with s.lock:
            while (error := self._recv_error()) is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise self._still_there(timeout)
                s.gone_sleepers += 1
                try:
                    s.gone.wait(limit(remaining))
                finally:
                    s.gone_sleepers -= 1
        raise error


class SseListener(Listener):
    """Serves event streams; ``accept()`` returns one channel per new client stream."""

    def __init__(
        self,
        server: SseServer,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        ready: queue.SimpleQueue[SseServerChannel | None],
        sock: socket.socket,
    ) -> None:
        self.url = server.url
        self._server = server
        self._loop = loop
        self._thread = thread
        self._ready = ready
        self._sock = sock
        self._owner = os.getpid()
        self._closed = False

    def accept(self, *, timeout: float | None = None) -> Channel:
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        try:
            ch = self._ready.get(timeout=limit(timeout))
        except queue.Empty:
            raise Timeout(
                f"no client connected to {self.url} within {timeout} s", endpoint=self.url
            ) from None
        if ch is None:
            self._ready.put(None)
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        return ch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._owner:
            # A forked child closing its copy: the serving thread and its loop are the
            # parent's (they do not run here). Only let go of the listening socket, so that
            # the port is free once the parent closes it.
            self._sock.close()
            return
        loop = self._loop
        if not loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), loop)
            try:
                fut.result(SHUTDOWN_TIMEOUT + 3)
            except Exception as exc:
                log.warning("%s: shutdown: %s", self.url, exc)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                loop.close()
        while True:
            try:
                ch = self._ready.get_nowait()
            except queue.Empty:
                break
            if ch is not None:
                ch.close()
        self._ready.put(None)


def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    **kw: Any,
) -> SseListener:
    """Serve event streams; see :func:`ipcwire.listen` and the docs page.

    Options: ``ssl=``, ``backlog=``, ``origins=``, ``pages=``, ``replay=`` (events kept for
    resuming clients, 1024), ``replay_bytes=`` (16 MiB), ``resume_window=`` (seconds a
    disconnected client's stream is kept, 60), ``keepalive=`` (seconds between keepalive
    comments, 15), ``retry=`` (reconnection delay advised to clients, seconds, 1.0).

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError.
    """
    sock, settings, ssl, backlog = bind(endpoint, options, kw)
    ready: queue.SimpleQueue[SseServerChannel | None] = queue.SimpleQueue()
    server = new_server(settings, SseServerChannel, ready.put, ready.qsize)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_forever, name=f"ipcwire sse {settings.url}", daemon=True
    )
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(sock, ssl, backlog), loop).result(10)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        sock.close()
        raise
    warn_if_plaintext(sock, settings, ssl)
    return SseListener(server, loop, thread, ready, sock)
