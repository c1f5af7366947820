"""WebSocket, blocking driver: ``websockets.sync`` (threads and sockets; never asyncio).

The library reads each connection in its own thread and hands whole messages to ``recv``;
``send`` writes from the caller's thread. The listener accepts in the caller's ``accept()``
and runs each connection's opening handshake in a short-lived thread, so a slow or hostile
client never delays the others.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl as ssl_module
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.sync.connection import Connection
from websockets.sync.server import Server, ServerConnection
from websockets.typing import Origin

from ipcwire._core.codecs import Codec
from ipcwire._core.url import Endpoint
from ipcwire.channel import Channel, ChannelStatistics, Listener, PeerInfo
from ipcwire.errors import (
    ChannelClosed,
    ConfigurationError,
    FrameTooLarge,
    IpcwireError,
    Timeout,
)
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.ws._common import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    ERROR_HEADER,
    HELLO_HEADER,
    POLICY_VIOLATION,
    WELCOME_HEADER,
    Admission,
    ServerSettings,
    WsAddress,
    admit,
    check_payload,
    client_handshake,
    close_reason,
    closed_error,
    finish_admission,
    log_refusal,
    open_error,
    rejected_error,
    resolve,
    welcome_step,
)
from ipcwire.ws._sockets import Authorizer, bind, open_blocking, peer_of

__all__ = ["WsChannel", "WsListener", "connect", "listen"]

log = logging.getLogger("ipcwire")

_TIMEVAL = struct.Struct("@ll")
_CONNECT_OPTIONS = (
    "timeout",
    "reconnect",
    "ssl",
    "server_hostname",
    "origin",
    "headers",
    "ping_interval",
    "ping_timeout",
    "close_timeout",
    "compression",
)
_LISTEN_OPTIONS = (
    "ssl",
    "backlog",
    "origins",
    "pages",
    "mode",
    "allow_uids",
    "ping_interval",
    "ping_timeout",
    "close_timeout",
    "compression",
)


class WsChannel(Channel):
    """One WebSocket connection as an ipcwire channel (blocking)."""

    def __init__(
        self,
        conn: Connection,
        url: str,
        codec: Codec,
        *,
        max_frame: int,
        send_limit: int,
        peer: PeerInfo | None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.url = url
        self._conn = conn
        self._codec = codec
        self._decode = codec.decode
        self._text = codec.name == "json"  # JSON in text frames, as browsers expect
        self._max_frame = max_frame
        self._send_limit = send_limit
        self._peer = peer
        self._close_timeout = close_timeout
        self._recv_lock = threading.Lock()
        self._closed = False
        self._too_large_reported = False
        self._sndtimeo: float | None = None
        self._sent = 0
        self._received = 0
        self._bytes_sent = 0
        self._bytes_received = 0

    # -- sending ----------------------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        payload = check_payload(self._codec, obj, self._send_limit, self.url)
        if timeout != self._sndtimeo:
            self._set_send_timeout(timeout)
        try:
            self._conn.send(payload, text=self._text)
        except ConnectionClosed as exc:
            raise self._error(exc, sending=True) from exc
        self._sent += 1
        self._bytes_sent += len(payload)

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        payloads = [check_payload(self._codec, o, self._send_limit, self.url) for o in objs]
        if not payloads:
            return
        if timeout != self._sndtimeo:
            self._set_send_timeout(timeout)
        conn = self._conn
        write = conn.protocol.send_text if self._text else conn.protocol.send_binary
        try:
            with conn.send_context():  # one lock, all frames, then one flush
                for p in payloads:
                    write(p)
        except ConnectionClosed as exc:
            raise self._error(exc, sending=True) from exc
        self._sent += len(payloads)
        self._bytes_sent += sum(len(p) for p in payloads)

    def _set_send_timeout(self, timeout: float | None) -> None:
        # SO_SNDTIMEO bounds a blocked write without putting the socket in non-blocking mode
        # (which would add a poll() before every read of the library's reader thread).
        usec = 0 if timeout is None else max(1, round(timeout * 1_000_000))
        try:
            self._conn.socket.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_SNDTIMEO,
                _TIMEVAL.pack(usec // 1_000_000, usec % 1_000_000),
            )
        except OSError:
            return
        self._sndtimeo = timeout

    # -- receiving --------------------------------------------------------------------------
    def recv(self, *, timeout: float | None = None) -> Any:
        with self._recv_lock:
            data = self._recv_raw(timeout)
        self._received += 1
        self._bytes_received += len(data)
        return self._decode(data)  # type: ignore[arg-type]

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        decode = self._decode
        with self._recv_lock:
            data = self._recv_raw(timeout)
            out = [decode(data)]  # type: ignore[arg-type]
            nbytes = len(data)
            recv = self._conn.recv
            while max_messages is None or len(out) < max_messages:
                try:
                    data = recv(0, decode=False)
                except (TimeoutError, ConnectionClosed):
                    break  # the next recv() reports the end
                nbytes += len(data)
                out.append(decode(data))  # type: ignore[arg-type]
        self._received += len(out)
        self._bytes_received += nbytes
        return out

    def _recv_raw(self, timeout: float | None) -> bytes:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        try:
            return self._conn.recv(timeout, decode=False)
        except TimeoutError:
            raise Timeout(
                f"no message from {self.url} within {timeout} s", endpoint=self.url
            ) from None
        except ConnectionClosed as exc:
            raise self._error(exc, sending=False) from exc

    def _error(self, exc: ConnectionClosed, *, sending: bool) -> IpcwireError:
        if self._closed:
            return ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        err = closed_error(
            exc,
            self.url,
            sending=sending,
            max_frame=self._max_frame,
            first_too_large=not sending and not self._too_large_reported,
        )
        if isinstance(err, FrameTooLarge):
            self._too_large_reported = True
        return err

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        # A send blocked on a peer that does not read holds the connection's lock; then the
        # closing handshake cannot be written: shut the socket down instead (bounded).
        if not conn.protocol_mutex.acquire(timeout=self._close_timeout):
            try:
                conn.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close_socket()
            return
        conn.protocol_mutex.release()
        conn.close()  # the closing handshake, bounded by close_timeout

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

    @property
    def latency(self) -> float:
        """Round-trip time measured by the last keepalive ping, in seconds (0 before one)."""
        return self._conn.latency

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
        )


# -- connecting -----------------------------------------------------------------------------
def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    origin: str | None = None,
    headers: Mapping[str, str] | None = None,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    compression: str | None = None,
    **kw: Any,
) -> WsChannel:
    """Connect to a WebSocket endpoint; see :func:`ipcwire.connect` and the docs page.

    Raises:
        ConnectionRefused: nothing listens there, or no endpoint at that path (404).
        AuthenticationFailed, PermissionDenied (Origin refused), HandshakeError (codec),
        Timeout, ConfigurationError, InvalidURL.
    """
    reject_unknown(kw, endpoint, _CONNECT_OPTIONS)
    addr = resolve(endpoint, listening=False)
    url = endpoint.url
    if ssl is not None and not addr.secure:
        raise ConfigurationError(f"ssl= is for wss:// URLs, not {url}")
    sock, deadline = open_blocking(addr, url, timeout=timeout, reconnect=reconnect)
    peer = peer_of(sock, addr)
    hs, hello = client_handshake(options)
    extra: dict[str, str] = {HELLO_HEADER: hello}
    extra.update(headers or {})
    limit = max(deadline - time.monotonic(), 0.001)
    try:
        conn = ws_connect(
            addr.uri(),
            sock=sock,
            ssl=ssl if addr.secure else None,
            server_hostname=server_hostname,
            origin=Origin(origin) if origin is not None else None,
            additional_headers=extra,
            compression=compression,
            proxy=None,
            open_timeout=limit,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=options.max_frame,
            legacy=True,
        )
    except InvalidStatus as exc:
        sock.close()
        raise rejected_error(exc, hs, url) from None
    except Exception as exc:
        sock.close()
        raise open_error(exc, url, limit) from exc
    try:
        send_limit = _finish_client(conn, hs, url, deadline)
    except BaseException:
        conn.close_socket()
        raise
    return WsChannel(
        conn,
        url,
        options.codec,
        max_frame=options.max_frame,
        send_limit=send_limit,
        peer=peer,
        close_timeout=close_timeout,
    )


def _finish_client(conn: ClientConnection, hs: Any, url: str, deadline: float) -> int:
    """The rest of the ipcwire handshake after the 101: the proof exchange with a token."""
    assert conn.response is not None
    welcome = conn.response.headers.get_all(WELCOME_HEADER)
    step = welcome_step(hs, welcome[0] if welcome else None, url)
    while not step.done:
        try:
            if step.send:
                conn.send(step.send.rstrip(b"\n"), text=True)
            reply = conn.recv(max(deadline - time.monotonic(), 0.001), decode=False)
        except TimeoutError:
            raise Timeout(
                f"{url} did not finish the token handshake in time", endpoint=url
            ) from None
        except ConnectionClosed as exc:
            raise open_error(exc, url, 0) from exc
        step = hs.receive(reply)
    return int(hs.peer_max_frame) if welcome else int(hs.max_frame)


# -- listening ------------------------------------------------------------------------------
class _Conn(ServerConnection):
    """A server connection that remembers the admission decided for it."""

    admission: Admission | None = None


class WsListener(Listener):
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
        self.url = settings.url
        self._settings = settings
        self._sock = sock
        self._authorize = authorize
        self._ssl = ssl_context
        self._on_close = on_close
        self._closed = False
        self._cond = threading.Condition()
        self._ready: deque[WsChannel] = deque()
        self._inflight = 0
        self._max_ready = max(1, max_ready)
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
        opts = settings.options
        self._extensions = (
            [ServerPerMessageDeflateFactory()] if settings.compression == "deflate" else None
        )
        self._max_frame = opts.max_frame
        self._thread = threading.Thread(
            target=self._run, name=f"ipcwire ws acceptor {self.url}", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        """The listening socket's fd."""
        return self._sock.fileno()

    def accept(self, *, timeout: float | None = None) -> Channel:
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._closed, timeout):
                raise Timeout(
                    f"no client connected to {self.url} within {timeout} s", endpoint=self.url
                )
            if self._closed:
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
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
                if full and listening:
                    self._sel.unregister(self._sock)
                    listening = False
                elif not full and not listening:
                    self._sel.register(self._sock, selectors.EVENT_READ, "listen")
                    listening = True
                for key, _ in self._sel.select():
                    if self._closed:
                        break
                    if key.data == "listen":
                        self._accept_new()
                    else:
                        try:
                            while self._wake_r.recv(512):
                                pass
                        except OSError:
                            pass
        except Exception:  # pragma: no cover - a bug here must not pass silently
            log.exception("ipcwire: the acceptor of %s failed", self.url)

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
                if not self._closed:
                    log.warning("ipcwire: %s: accept failed: %s", self.url, exc)
                return
            conn.setblocking(True)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms stalls
            with self._cond:
                self._inflight += 1
            threading.Thread(
                target=self._handshake,
                args=(conn,),
                name=f"ipcwire ws handshake {self.url}",
                daemon=True,
            ).start()

    def _handshake(self, sock: socket.socket) -> None:
        ch: WsChannel | None = None
        try:
            ch = self._admit(sock)
        except Exception:  # pragma: no cover - a bug here must not pass silently
            log.exception("ipcwire: %s: a handshake failed", self.url)
        with self._cond:
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
                sock = self._ssl.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
            except (OSError, ValueError) as exc:
                log.info("ipcwire: %s: TLS handshake with %s failed: %s", self.url, who, exc)
                sock.close()
                return None
        protocol = ServerProtocol(extensions=self._extensions, max_size=self._max_frame, logger=log)
        conn = _Conn(
            sock,
            protocol,
            self._server,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            close_timeout=settings.close_timeout,
        )

        def process_request(c: ServerConnection, request: Request) -> Response | None:
            adm = admit(settings, request.path, request.headers, refusal=refusal)
            conn.admission = adm
            return _http_answer(c, adm, self.url, who)

        def process_response(c: ServerConnection, r: Request, response: Response) -> None:
            adm = conn.admission
            if adm is not None and adm.welcome and response.status_code == 101:
                response.headers[WELCOME_HEADER] = adm.welcome

        try:
            conn.handshake(process_request, process_response, "ipcwire", opts.handshake_timeout)
        except Exception as exc:
            log.info("ipcwire: %s: handshake with %s failed: %s", self.url, who, exc)
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
            log_refusal(self.url, who, "no token within the handshake timeout")
            conn.close(POLICY_VIOLATION, "a token is required")
            return False
        except ConnectionClosed:
            return False
        reply, err = finish_admission(adm, first, self._settings.options.token)
        try:
            if reply:
                conn.send(reply, text=True)
            if err is not None:
                log_refusal(self.url, who, err)
                conn.close(POLICY_VIOLATION, close_reason(err))
                return False
        except ConnectionClosed:
            return False
        return True

    def close(self) -> None:
        if self._closed:
            return
        with self._cond:
            self._closed = True
            ready = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        self._server.socket_closed.set()  # handshakes still in flight get 503
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
        for ch in ready:
            ch.close()
        self._sel.close()
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._on_close is not None:
            self._on_close()


def _http_answer(c: ServerConnection, adm: Admission, url: str, who: str) -> Response | None:
    """The HTTP response for a request that is not accepted as a WebSocket (or None)."""
    if adm.status == 101:
        return None
    if adm.page is not None:
        headers = Headers(
            [
                ("Content-Type", adm.page.content_type),
                ("Content-Length", str(len(adm.page.body))),
                ("Cache-Control", "no-cache"),
                ("Connection", "close"),
            ]
        )
        return Response(200, "OK", headers, adm.page.body)
    response = c.respond(adm.status, adm.text)
    if adm.error_header is not None:
        response.headers[ERROR_HEADER] = adm.error_header
    if adm.error is not None:
        log_refusal(url, who, adm.error)
    return response


def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    ssl: ssl_module.SSLContext | None = None,
    backlog: int = 128,
    origins: Iterable[str] | str | None = None,
    pages: Mapping[str, str | bytes] | None = None,
    mode: int = 0o600,
    allow_uids: Iterable[int] | None = None,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    compression: str | None = None,
    **kw: Any,
) -> WsListener:
    """Listen for WebSocket clients; see :func:`ipcwire.listen` and the docs page.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError.
    """
    reject_unknown(kw, endpoint, _LISTEN_OPTIONS)
    addr = resolve(endpoint, listening=True)
    _check_tls(addr, ssl, endpoint.url)
    sock, port, authorize, cleanup = bind(
        addr, endpoint.url, backlog=backlog, mode=mode, allow_uids=allow_uids
    )
    try:
        url = addr.listener_url(port)
        settings = ServerSettings.build(
            url,
            addr.path,
            _with_url(options, url),
            origins=origins,
            pages=pages,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            compression=compression,
        )
    except BaseException:
        sock.close()
        cleanup()
        raise
    return WsListener(
        sock, settings, authorize=authorize, ssl_context=ssl, on_close=cleanup, max_ready=backlog
    )


def _check_tls(addr: WsAddress, ssl: ssl_module.SSLContext | None, url: str) -> None:
    if addr.secure and ssl is None:
        raise ConfigurationError(
            f"listening at {url} needs ssl=SSLContext with a certificate "
            f"(ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); "
            f"ctx.load_cert_chain(cert, key)), or use ws://"
        )
    if ssl is not None and not addr.secure:
        raise ConfigurationError(f"ssl= is for wss:// URLs; listen at wss://... instead of {url}")


def _with_url(options: ChannelOptions, url: str) -> ChannelOptions:
    """The options with the listener's real URL (port 0 replaced), for error messages."""
    import dataclasses

    return dataclasses.replace(options, url=url)
