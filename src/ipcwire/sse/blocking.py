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
import queue
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._oserror import translate
from ipcwire._stream.retry import backoff_delays
from ipcwire.channel import Channel, ChannelStatistics, Listener, PeerInfo
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions, reject_unknown
from ipcwire.sse._client import (
    DEFAULT_RETRY,
    DEFAULT_RETRY_FOR,
    FATAL,
    ClientCore,
    Raise,
    resolve,
)
from ipcwire.sse._common import (
    CLIENT_OPTIONS,
    ServerChannelBase,
    batches,
    bind,
    new_server,
    one_way_error,
)
from ipcwire.sse._events import b64encode
from ipcwire.sse._http import parse_head
from ipcwire.sse._server import SHUTDOWN_TIMEOUT, SseServer

__all__ = ["SseClientChannel", "SseListener", "SseServerChannel", "connect", "listen"]

log = logging.getLogger("ipcwire")


class SseClientChannel(Channel):
    """The receiving end of an event stream (blocking): messages from the server."""

    def __init__(
        self,
        core: ClientCore,
        *,
        connect_timeout: float,
        ssl: ssl_module.SSLContext | None,
        server_hostname: str | None,
    ) -> None:
        self.url = core.url
        self._core = core
        self._queue = core.queue
        self._connect_timeout = connect_timeout
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._sock: socket.socket | None = None
        self._sock_timeout: float | None = -1.0
        self._buf = bytearray(65536)
        self._view = memoryview(self._buf)
        self._recv_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._lost_at: float | None = None
        self._next_attempt: float | None = None
        self._last_failure: BaseException | None = None
        self._peer: PeerInfo | None = None

    # -- one connection ---------------------------------------------------------------------
    def _open(self, deadline: float) -> None:
        """Connect, send the request, read the response head; raises typed errors."""
        core = self._core
        addr = core.addr
        url = self.url
        try:
            sock = socket.create_connection(
                (addr.host, addr.port), timeout=max(deadline - time.monotonic(), 0.001)
            )
            if addr.secure:
                ctx = self._ssl or ssl_module.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=self._server_hostname or addr.host)
        except ssl_module.SSLError as exc:
            raise ChannelBroken(f"TLS handshake with {url} failed: {exc}", endpoint=url) from exc
        except TimeoutError as exc:
            raise Timeout(f"connecting to {url} timed out", endpoint=url) from exc
        except OSError as exc:
            raise translate(exc, url, "connecting to") from exc
        self._sock = sock
        if self._closed:
            sock.close()
            raise ChannelClosed(f"{url} is closed", endpoint=url)
        try:
            sock.sendall(core.request())
            buf = bytearray()
            while (parsed := parse_head(buf, url)) is None:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(65536)
                if not chunk:
                    raise ChannelBroken(
                        f"{url} closed the connection before answering", endpoint=url
                    )
                buf += chunk
            head, size = parsed
            rest = bytes(buf[size:])
            open_ = core.accept_head(head, rest)
        except TimeoutError as exc:
            self._drop_socket()
            raise Timeout(
                f"{url} did not answer within {self._connect_timeout} s", endpoint=url
            ) from exc
        except OSError as exc:
            self._drop_socket()
            raise translate(exc, url, "connecting to") from exc
        except BaseException:
            self._drop_socket()
            raise
        if not open_:
            self._drop_socket()
            return
        try:
            host, port = sock.getpeername()[:2]
            self._peer = PeerInfo(address=f"{host}:{port}")
        except OSError:
            pass
        self._sock_timeout = -1.0
        self._lost_at = None
        core.feed(rest)

    def _drop_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

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
        with self._recv_lock:
            return self._recv(timeout)

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        with self._recv_lock:
            out = [self._recv(timeout)]
            core = self._core
            try:
                while core.has_message() and (max_messages is None or len(out) < max_messages):
                    out.append(core.pop())
            except IndexError:
                pass  # a recv() in another thread took the last one
            return out

    def _recv(self, timeout: float | None) -> Any:
        core = self._core
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            if core.queue:
                try:
                    return core.pop()
                except IndexError:
                    continue  # a recv() in another thread took it
            if core.final is not None:
                raise core.final
            if self._sock is None:
                self._reconnect(deadline, timeout)
            else:
                self._read(deadline, timeout)

    def _read(self, deadline: float | None, timeout: float | None) -> None:
        sock = self._sock
        assert sock is not None
        wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if wait != self._sock_timeout:
            sock.settimeout(wait)
            self._sock_timeout = wait
        try:
            n = sock.recv_into(self._buf)
        except (BlockingIOError, TimeoutError):
            raise Timeout(
                f"no message from {self.url} within {timeout} s", endpoint=self.url
            ) from None
        except OSError as exc:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url) from None
            self._connection_lost(exc)
            return
        if n == 0:
            self._connection_lost(None)
            return
        try:
            self._core.feed(self._view[:n])
        except RemoteProtocolError as exc:
            self._connection_lost(exc)
            return
        if self._core.body_done:
            self._connection_lost(None)

    def _connection_lost(self, exc: BaseException | None) -> None:
        self._drop_socket()
        if self._core.final is not None or self._closed:
            return
        log.info("ipcwire: lost the event stream %s (%s); reconnecting", self.url, exc or "closed")
        self._last_failure = exc
        self._lost_at = time.monotonic()
        self._next_attempt = None

    def _reconnect(self, deadline: float | None, timeout: float | None) -> None:
        core = self._core
        now = time.monotonic()
        if self._lost_at is None:
            self._lost_at = now
        if now - self._lost_at > core.retry_for:
            raise core.give_up(str(self._last_failure or "no answer"), self._last_failure)
        if self._next_attempt is None:
            self._next_attempt = now + core.next_delay()
        wait = self._next_attempt - now
        if wait > 0:
            if deadline is not None:
                if deadline <= now:
                    raise Timeout(
                        f"no message from {self.url} within {timeout} s (reconnecting)",
                        endpoint=self.url,
                    )
                wait = min(wait, deadline - now)
            self._wake.wait(wait)
            return
        self._next_attempt = None
        limit = (
            self._connect_timeout
            if deadline is None
            else min(self._connect_timeout, max(deadline - now, 0.001))
        )
        try:
            self._open(now + limit)
        except FATAL as exc:
            core.final = exc
            raise
        except (ChannelBroken, Timeout) as exc:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url) from None
            self._last_failure = exc

    # -- the rest ---------------------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        raise one_way_error(self.url)

    def close(self) -> None:
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

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

    @property
    def last_event_id(self) -> str:
        """The id of the last event received (sent as ``Last-Event-ID`` when resuming)."""
        return self._core.parser.last_id

    @property
    def retry(self) -> float:
        """The reconnection delay in force, in seconds (the server's ``retry:`` if sent)."""
        return self._core.retry_seconds

    def statistics(self) -> ChannelStatistics:
        core = self._core
        return ChannelStatistics(
            messages_sent=0,
            messages_received=core.received,
            bytes_sent=0,
            bytes_received=core.bytes_received,
            buffered_bytes=0,
            dropped=core.dropped,
        )


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
    reject_unknown(kw, endpoint, CLIENT_OPTIONS)
    addr = resolve(endpoint, listening=False)
    core = ClientCore(
        options,
        addr,
        headers=headers,
        last_event_id=last_event_id,
        allow_gaps=allow_gaps,
        retry=retry,
        retry_for=retry_for,
    )
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
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
        raise one_way_error(self.url, server=True, closed=self._closed)


class SseListener(Listener):
    """Serves event streams; ``accept()`` returns one channel per new client stream."""

    def __init__(
        self,
        server: SseServer,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        ready: queue.SimpleQueue[SseServerChannel | None],
    ) -> None:
        self.url = server.url
        self._server = server
        self._loop = loop
        self._thread = thread
        self._ready = ready
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def accept(self, *, timeout: float | None = None) -> Channel:
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        try:
            ch = self._ready.get(timeout=timeout)
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
        loop = self._loop
        if not loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), loop)
            try:
                fut.result(SHUTDOWN_TIMEOUT + 3)
            except Exception as exc:
                log.warning("ipcwire: %s: shutdown: %s", self.url, exc)
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
    server = new_server(settings, SseServerChannel, ready.put)
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
    return SseListener(server, loop, thread, ready)
