"""gRPC, blocking driver: grpcio's synchronous API on both sides (no event loop).

The listener is a ``grpc.server`` with a thread pool: each channel is one bidirectional
stream and occupies one pool thread for its life (``max_channels``, 64 by default; more
clients get RESOURCE_EXHAUSTED, which is ``ResourceExhausted`` on their side). This module
opens channels and listens; the client channels are ``_blocking_channels.py``'s.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent import futures
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._deadline import not_seconds, seconds_left
from ipcwire._oserror import unreachable, unreachable_cause
from ipcwire._stream.retry import backoff_delays
from ipcwire.channel import (
    Channel,
    Listener,
    PeerInfo,
)
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    ConnectionRefused,
    IpcwireError,
    RemoteProtocolError,
)
from ipcwire.grpc import _watchdog
from ipcwire.grpc._address import (
    GrpcAddress,
    backlog_is_full,
    channel_options,
    file_mode,
    resolve,
)
from ipcwire.grpc._blocking_channels import GrpcStreamChannel, GrpcUnaryChannel
from ipcwire.grpc._channel import CONNECT_KW, EXIT_WAIT, LINGER, LISTEN_KW
from ipcwire.grpc._grpcio import ensure_descriptors, ensure_threads, grpc
from ipcwire.grpc._keepalive import Keepalive
from ipcwire.grpc._pool import Pool, refusing
from ipcwire.grpc._protocol import (
    MAX_FRAME_KEY,
    NO_REPLY_KEY,
    STREAM,
    check_welcome,
    client_metadata,
    connect_timed_out,
    error_from_status,
    failure_details,
    metadata_dict,
    reads_batches,
)
from ipcwire.grpc._server import ServerCore, bind_server, warn_if_plaintext
from ipcwire.grpc._sync import SyncOneShot, SyncStream
from ipcwire.grpc._tls import client_credentials
from ipcwire.options import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    ChannelOptions,
    reject_unknown,
)
from ipcwire.unix._socket import backlog_delays, backlog_full

__all__ = ["GrpcListener", "GrpcStreamChannel", "GrpcUnaryChannel", "connect", "listen"]

log = logging.getLogger("ipcwire")

# Listeners not closed yet. Each open stream holds a thread of its listener's pool, and a
# pool's threads are not daemons: at exit the interpreter joins them, which would wait for
# ever for streams nobody closes (a program that returned, or was stopped with Ctrl-C, with a
# channel open). So they are closed first, by a hook of threading's own exit, which runs
# before that join (``threading._register_atexit``, as concurrent.futures itself uses).
_open: weakref.WeakSet[GrpcListener] = weakref.WeakSet()
_hooked = False


def _close_at_exit() -> None:
    for listener in list(_open):
        try:
            listener.close()
        except Exception:  # exiting: one listener's failure must not stop the rest
            log.debug("closing %s at exit failed", listener.url, exc_info=True)


def _track(listener: GrpcListener) -> None:
    global _hooked
    _open.add(listener)
    if not _hooked:
        _hooked = True
        register = getattr(threading, "_register_atexit", None)
        if register is not None:  # CPython 3.9+
            register(_close_at_exit)


class GrpcListener(Listener):
    """A gRPC endpoint (blocking API) on a ``grpc.server`` thread pool."""

    def __init__(self, url: str, core: ServerCore, cleanup: Callable[[], None]) -> None:
        self.url = url
        self._core = core
        self._cleanup = cleanup
        self._cond = threading.Condition()
        self._ready: deque[Channel] = deque()
        self._closed = False
        self.server: Any = None
        self.pool: futures.ThreadPoolExecutor | None = None
        self._owner = os.getpid()

    def enqueue(self, ch: SyncStream | SyncOneShot) -> None:
        with self._cond:
            if self._closed or ch.rpc_ended():  # (its client left already: see discard)
                ch.close()
                return
            self._ready.append(ch)
            self._cond.notify()

    def discard(self, ch: SyncStream | SyncOneShot) -> None:
        """``ch``'s RPC ended (its client cancelled, or died, or stopped waiting): if nobody
        accepted it yet, it leaves the queue, so that dead channels do not pile up there
        while nobody accepts, nor are handed out by accept(). Called after the channel says
        so (``rpc_ended()``), so one that ends before it is queued is not queued."""
        with self._cond:
            try:
                self._ready.remove(ch)
            except ValueError:
                return  # accepted already (the application sees the end), or never queued
        ch.close()

    def _refuse_if_no_thread(self, context: Any) -> None:
        """No pool thread could be started for this RPC (``_pool``): refuse it at once."""
        reason = refusing()
        if reason is not None:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server cannot start a thread for this connection ({reason}): it is at "
                f"its limit of processes/threads; try again later",
            )

    # The handlers grpcio calls, in its pool threads.
    def stream(self, request_iterator: Any, context: Any) -> Any:
        self._refuse_if_no_thread(context)
        adm = self._core.admit(context.invocation_metadata())
        if adm.error is not None:
            self._core.refused(context, adm.error)
            context.abort(*adm.error)
        context.send_initial_metadata(adm.initial)
        peer = self._core.peer(context)
        ch = SyncStream(
            self.url, self._core.codec, adm.send_limit, peer, client=False,
            incoming=request_iterator,
        )  # fmt: skip
        ch.batches = adm.batches
        ch.expect_bye = adm.bye
        ch.fail_status = lambda reason: _fail(context, reason)
        ch.cancelled = lambda: _rpc_cancelled(context)
        if adm.ipcwire:  # an ipcwire client's close ends the channel: end the RPC then
            ch._on_eof = ch.finish

        # The RPC ended: let the response generator return. grpcio registers nothing (False)
        # when the RPC is over already (the client cancelled, or died, before this handler
        # ran): the generator would then hold this pool thread, and the RPC's place among
        # max_channels=, until the application accepted the dead channel and closed it.
        def rpc_done() -> None:  # ... and takes it out of the accept queue (``discard``)
            ch.rpc_done()
            self.discard(ch)

        if not context.add_callback(rpc_done):
            return iter(())
        self.enqueue(ch)
        return ch.outgoing()

    def call(self, request: bytes, context: Any) -> bytes:
        self._refuse_if_no_thread(context)
        adm = self._core.admit(context.invocation_metadata())
        if adm.error is not None:
            self._core.refused(context, adm.error)
            context.abort(*adm.error)
        peer = self._core.peer(context)
        ch = SyncOneShot(self.url, self._core.codec, request, peer, adm.send_limit)
        gone = ChannelBroken(f"the caller of {self.url} stopped waiting", endpoint=self.url)

        def caller_gone() -> None:
            ch.caller_gone(gone)
            self.discard(ch)

        if not context.add_callback(caller_gone):
            return b""  # the call is over already (see stream()): nobody to answer
        self.enqueue(ch)
        wait = self._core.reply_wait(context.time_remaining())
        if not ch.done.wait(wait):
            caller_gone()
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the server application sent no reply within {wait} s",
            )
        refusal = ch.refusal()
        if refusal is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)
        failed = ch.failure()  # the handler failed before it replied: say so, as a stream
        if failed is not None:
            context.abort(grpc.StatusCode.INTERNAL, failed)
        # The limit and the token's proof go in the trailing metadata: a unary call has
        # nothing to wait for before the reply, and it is sent with the status anyway.
        if ch.reply is None:
            context.set_trailing_metadata((*adm.initial, (NO_REPLY_KEY, "1")))
            return b""
        context.set_trailing_metadata(adm.initial)
        return ch.reply

    def accept(self, *, timeout: float | None = None) -> Channel:
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
        except TypeError:  # (checked here, where it is first used: no cost otherwise)
            raise not_seconds(timeout, self.url) from None
        with self._cond:
            while not self._ready or self._closed:
                if self._closed:
                    raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
                self._cond.wait(
                    seconds_left(
                        deadline, f"no client connected to {self.url} within {timeout} s", self.url
                    )
                )
            return self._ready.popleft()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            _open.discard(self)
            pending = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for ch in pending:
            ch.close()
        self._core.close_log()
        if os.getpid() != self._owner:
            # A forked child's copy: the server is its parent's, and calling into grpc after
            # fork() can abort the child (grpc skips its fork handlers while other threads
            # are in grpc calls). The socket file stays too (``remove_on_close``).
            self._cleanup()
            return
        if self.server is not None:
            self.server.stop(0.5).wait(3.0)
        if self.pool is not None:
            # grpcio does not shut down the pool it was given: its idle threads would stay
            # for as long as this object lives. Every RPC is over now, so they end at once.
            self.pool.shutdown(wait=False, cancel_futures=True)
            deadline = time.monotonic() + 3.0
            for t in list(getattr(self.pool, "_threads", ())):
                if t is not threading.current_thread():
                    t.join(max(deadline - time.monotonic(), 0.0))
        self._cleanup()


def _rpc_cancelled(context: Any) -> bool:
    """Whether grpcio saw the client cancel the RPC, or its connection die. The sync API has
    no public question for this once the RPC is over, so read grpcio's RPC state (if a
    grpcio release renames it, the answer is False: a lost client reads as a clean close)."""
    return getattr(getattr(context, "_state", None), "client", None) == "cancelled"


# Client streams closed whose RPC the server has not ended yet (each its call's end); the
# process waits for them at exit (EXIT_WAIT), so that their goodbye is read (_channel).
_CLOSING: set[threading.Event] = set()
_CLOSING_LOCK = threading.Lock()
_at_exit: list[bool] = []


def _closing(call: Any) -> None:
    """Count ``call``, a closed client stream's, until the server ends it."""
    over = threading.Event()
    with _CLOSING_LOCK:
        if not _at_exit:
            # Registered at the first close: after grpc's own exit handlers, so run before
            # them (atexit runs the last registered first).
            atexit.register(_wait_closing)
            _at_exit.append(True)
        _CLOSING.add(over)

    def done(_: object) -> None:
        over.set()
        with _CLOSING_LOCK:
            _CLOSING.discard(over)

    call.add_done_callback(done)  # (at once if the call is already over)


def _wait_closing() -> None:
    """At exit: let the servers of the client streams closed last read their goodbye.
    grpcio writes it from its own threads, and close() returns at once; without this wait
    the process could end first, its connection dropped with the goodbye unread, and the
    server would take the clean close for a lost client ('went away')."""
    deadline = time.monotonic() + EXIT_WAIT
    with _CLOSING_LOCK:
        pending = list(_CLOSING)
    for over in pending:
        if not over.wait(max(deadline - time.monotonic(), 0.0)):
            return


def open_channel(
    addr: GrpcAddress, options: ChannelOptions, tls: dict[str, Any], keepalive: Keepalive
) -> Any:
    """A grpc.Channel to ``addr`` (TLS when asked)."""
    hostname = tls.pop("server_hostname", None)
    creds = client_credentials(options.url, tls=addr.scheme == "grpcs", **tls)
    opts = channel_options(options.max_frame, hostname) + keepalive.client_options()
    ensure_descriptors(options.url)
    ensure_threads(options.url)
    if creds is not None:
        return grpc.secure_channel(addr.target(), creds, options=opts)
    return grpc.insecure_channel(addr.target(), options=opts)


def _fail(context: Any, reason: str) -> None:
    """End a server channel's RPC with the status of a failure (see grpc/_protocol.py)."""
    context.set_code(grpc.StatusCode.INTERNAL)
    context.set_details(failure_details(reason))


def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    unary: bool = False,
    cafile: str | os.PathLike[str] | None = None,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    server_hostname: str | None = None,
    credentials: Any = None,
    **kw: Any,
) -> Channel:
    """Connect to an ipcwire gRPC endpoint; see :func:`ipcwire.connect` and
    docs/mechanisms/grpc.md. ``unary=True`` makes every ``request`` one unary call.

    Raises:
        ConnectionRefused, AuthenticationFailed, HandshakeError, Timeout, InvalidURL.
    """
    if "ssl" in kw:
        raise ConfigurationError("gRPC has its own TLS: pass cafile= (and certfile=/keyfile=)")
    keepalive = Keepalive.take(endpoint, kw)
    reject_unknown(kw, endpoint, CONNECT_KW)
    addr = resolve(endpoint, listening=False)
    url = addr.url(tls=addr.scheme == "grpcs" or cafile is not None or credentials is not None)
    tls = {"cafile": cafile, "certfile": certfile, "keyfile": keyfile,
           "credentials": credentials, "server_hostname": server_hostname}  # fmt: skip
    nonce = secrets.token_bytes(16)
    md = client_metadata(options, url, nonce)
    if unary:
        gch = open_channel(addr, options, tls, keepalive)
        return GrpcUnaryChannel(url, options, gch, md, nonce, reconnect)
    limit = DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout
    start = time.monotonic()
    delays = backoff_delays()
    busy_delays = backlog_delays()
    while True:
        gch = open_channel(addr, options, dict(tls), keepalive)
        try:
            # each attempt has timeout= to be answered (reconnect= bounds the retries)
            stream = _open_stream(
                gch, url, options, md, nonce, time.monotonic() + limit, (limit, reconnect)
            )
            return GrpcStreamChannel(stream)
        except ConnectionRefused as exc:
            gch.close()
            # busy, not gone (its backlog is full, or was until just now): try again until
            # the timeout
            if backlog_is_full(addr, exc):
                left = start + limit - time.monotonic()
                if left <= 0:
                    raise backlog_full(url, limit) from exc
                time.sleep(min(next(busy_delays), left))
                continue
            left = start + (reconnect or 0) - time.monotonic()
            if left <= 0:
                if reconnect:
                    raise ConnectionRefused(
                        f"{exc} (kept trying for {reconnect} s)", endpoint=url
                    ) from exc
                raise
            time.sleep(min(next(delays), left))
        except ChannelBroken as exc:
            # no route to the host (grpcio's words): as tcp://, retried under reconnect=
            gch.close()
            lost = unreachable_cause(exc)
            if lost is None:
                raise
            left = start + (reconnect or 0) - time.monotonic()
            if left <= 0:
                if reconnect:
                    raise unreachable(lost, url, reconnect=reconnect) from lost
                raise
            time.sleep(min(next(delays), left))
        except BaseException:
            gch.close()
            raise


def _open_stream(
    gch: Any,
    url: str,
    options: ChannelOptions,
    md: Any,
    nonce: bytes,
    deadline: float,
    timeouts: tuple[float, float | None],
) -> SyncStream:
    ch = SyncStream(url, options.codec, options.max_frame, PeerInfo(address=url), client=True)
    call = gch.stream_stream(STREAM)(ch.outgoing(), metadata=md)
    box: list[Any] = []
    ready = threading.Event()

    def wait_headers() -> None:  # grpcio's initial_metadata() has no timeout of its own
        try:
            box.append(call.initial_metadata())
        except Exception as exc:
            box.append(exc)
        ready.set()

    threading.Thread(target=wait_headers, name=f"ipcwire connect {url}", daemon=True).start()
    if not ready.wait(max(deadline - time.monotonic(), 0.0)):
        call.cancel()
        raise connect_timed_out(url, *timeouts)
    initial = metadata_dict(box[0]) if not isinstance(box[0], Exception) else {}
    if MAX_FRAME_KEY not in initial:  # refused (or not ipcwire): the status says which
        # A refusal has no headers, only a status; headers without our limit in them are a
        # server that is not ipcwire: no status to wait for.
        ended = threading.Event()
        call.add_done_callback(lambda _: ended.set())
        wait = 0.0 if initial else max(deadline - time.monotonic(), 0.5)
        if ended.wait(wait) and call.code() != grpc.StatusCode.OK:
            raise error_from_status(call.code(), call.details(), url, doing="connecting")
        call.cancel()
        raise RemoteProtocolError(f"{url} is not an ipcwire gRPC endpoint", endpoint=url)
    try:
        ch.send_limit = check_welcome(initial, options, url, nonce)
        ch.batches = reads_batches(initial)
    except IpcwireError:
        call.cancel()
        raise
    ch._incoming = call
    ch.call = call
    call.add_done_callback(ch.call_done)

    def release() -> None:
        """After close(): the server ends the RPC when it reads our half-close; then the
        grpc channel goes. Meanwhile what it still sends is read and dropped (as the asyncio
        driver does). A server that never ends it is cancelled after LINGER seconds."""
        if call.done():
            gch.close()
            return
        ch.drain()  # what the server still sends is read and dropped, so its RPC can end
        _closing(call)
        linger = _watchdog.after(LINGER, call.cancel)

        def finished(_: object) -> None:
            linger.cancel()  # or it holds the call (and its channel) for the whole LINGER
            _watchdog.after(0, gch.close)

        call.add_done_callback(finished)

    ch.on_close = release
    return ch


def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    client_ca: str | os.PathLike[str] | None = None,
    credentials: Any = None,
    mode: int | None = None,
    max_channels: int = 64,
    reply_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    **kw: Any,
) -> GrpcListener:
    """Serve an ipcwire gRPC endpoint; see :func:`ipcwire.listen` and docs/mechanisms/grpc.md.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError.
    """
    if "ssl" in kw:
        raise ConfigurationError("gRPC has its own TLS: pass certfile= and keyfile=")
    keepalive = Keepalive.take(endpoint, kw)
    reject_unknown(kw, endpoint, LISTEN_KW)
    addr = resolve(endpoint, listening=True)
    socket_mode = file_mode(addr, endpoint.url, mode)  # (refused on TCP)
    core = ServerCore(options, reply_timeout=reply_timeout, keepalive=keepalive)
    ensure_descriptors(endpoint.url)
    ensure_threads(endpoint.url)
    pool = Pool(max_channels, endpoint.url)
    server = grpc.server(pool, maximum_concurrent_rpcs=max_channels, options=core.server_options())
    tls = {"certfile": certfile, "keyfile": keyfile, "client_ca": client_ca,
           "credentials": credentials}  # fmt: skip
    url, cleanup = bind_server(server, addr, endpoint.url, tls, socket_mode)
    listener = GrpcListener(url, core, cleanup)
    core.url = pool.url = url
    server.add_generic_rpc_handlers((core.handlers(listener.stream, listener.call),))
    server.start()
    listener.server = server
    listener.pool = pool
    _track(listener)
    warn_if_plaintext(addr, url, options.token)
    return listener
