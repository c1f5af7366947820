"""gRPC, blocking driver: grpcio's synchronous API on both sides (no event loop).

The listener is a ``grpc.server`` with a thread pool: each channel is one bidirectional
stream and occupies one pool thread for its life (``max_channels``, 64 by default; more
clients get RESOURCE_EXHAUSTED, which is ``ResourceExhausted`` on their side).
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from concurrent import futures
from typing import Any, Final

from ipcwire._core.codecs import encode_message
from ipcwire._core.url import Endpoint
from ipcwire._core.wire import checked_decode
from ipcwire._deadline import limit, not_seconds, seconds_left
from ipcwire._oserror import unreachable, unreachable_cause
from ipcwire._stream.retry import backoff_delays
from ipcwire.channel import (
    _CLOSED_BECAUSE,
    Channel,
    ChannelStatistics,
    Listener,
    PeerInfo,
    closed_because,
    closed_error,
)
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    IpcwireError,
    LocalProtocolError,
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
from ipcwire.grpc._channel import CONNECT_KW, EXIT_WAIT, LINGER, LISTEN_KW, UnaryTries, forked
from ipcwire.grpc._grpcio import ensure_descriptors, ensure_threads, grpc
from ipcwire.grpc._keepalive import Keepalive
from ipcwire.grpc._pool import Pool, refusing
from ipcwire.grpc._protocol import (
    CALL,
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


class GrpcUnaryChannel(Channel):
    """A client channel of unary calls (``unary=True``): ``request`` is one call; ``send``
    makes a call and queues its reply for ``recv``."""

    def __init__(
        self,
        url: str,
        options: ChannelOptions,
        gch: Any,
        metadata: Any,
        nonce: bytes,
        reconnect: float | None = None,
    ) -> None:
        self.url = url
        self._options = options
        self._reconnect = reconnect or 0.0  # how long a refused call is tried again
        self._nonce = nonce
        self._codec = options.codec
        self._codec_decode = checked_decode(options.codec, url)  # RemoteProtocolError
        self._max_frame = options.max_frame
        self._gch = gch
        self._md = metadata
        self._method = gch.unary_unary(CALL)
        self._replies: deque[Any] = deque()
        self._closed = False
        self._owner = os.getpid()
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    def _call(self, obj: Any, timeout: float | None) -> Any:
        if self._closed:
            raise closed_error(self)
        if os.getpid() != self._owner:
            raise forked(self.url, self._owner)
        timeout = limit(timeout, self.url)  # grpc takes inf for a deadline in the past
        data = encode_message(self._codec, obj, 2**31 - 1, self.url)
        tries = UnaryTries(self.url, self._reconnect, timeout)
        while True:
            try:
                reply, call = self._method.with_call(data, timeout=tries.left(), metadata=self._md)
                break
            except grpc.RpcError as exc:
                if self._closed:
                    raise closed_error(self) from None
                pause = tries.failed(exc.code(), exc.details(), self._sent, len(data), exc)
            time.sleep(pause)
            tries.paused(self._closed)
        trailing = metadata_dict(call.trailing_metadata())
        if self._options.token is not None:  # the server proves it has the token too
            check_welcome(trailing, self._options, self.url, self._nonce)
        self._sent += 1
        self._bytes_sent += len(data)
        if trailing.get(NO_REPLY_KEY):
            return _NO_REPLY
        self._received += 1
        self._bytes_received += len(reply)
        return self._codec_decode(memoryview(reply))

    def _exchange(self, obj: Any, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Any:
        if self._replies:
            self.send(obj, timeout=timeout)
            return self.recv(timeout=0)
        reply = self._call(obj, timeout)
        if reply is _NO_REPLY:
            raise EndOfChannel(f"{self.url} handled the call but sent no reply", endpoint=self.url)
        return reply

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        reply = self._call(obj, timeout)
        if reply is not _NO_REPLY:
            self._replies.append(reply)

    def recv(self, *, timeout: float | None = None) -> Any:
        if self._closed:
            raise closed_error(self)
        if self._replies:
            return self._replies.popleft()
        raise LocalProtocolError(
            f"{self.url} is used with unary calls (unary=True): the server only speaks in reply "
            f"to a call. Use request(), or send() and then recv() the reply",
            endpoint=self.url,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if os.getpid() == self._owner:  # (not in a forked child: grpc is the parent's)
                self._gch.close()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(self._sent, self._received, self._bytes_sent, self._bytes_received)


_NO_REPLY: Final = object()


class GrpcStreamChannel(Channel):
    """A client's channel over one stream: what :func:`connect` returns.

    The stream's state (:class:`SyncStream`) is what grpcio's threads hold: its writer thread
    iterates the stream's outgoing messages, the reader pump fills its inbox, the call's done
    callback ends it. This object is held by the application alone, so that dropping it
    without close() is seen: a ``ResourceWarning``, and the stream is closed as close()
    closes it (the server sees the end; the threads, the call and the buffers go once the
    server ends its RPC, or after ``LINGER``). Before, the channel was that state itself, and
    grpcio's threads kept it (and themselves) alive until the server ended the call.
    """

    def __init__(self, stream: SyncStream) -> None:
        self._s = stream
        self.url = stream.url
        # The stream's own methods, bound here: one call (and, asyncio, one coroutine) less
        # per message than the delegating methods below, which document the API. They hold
        # the stream, not this object, so dropping this object is still seen (__del__).
        self.send = stream.send  # type: ignore[method-assign]
        self.send_many = stream.send_many  # type: ignore[method-assign]
        self.recv = stream.recv  # type: ignore[method-assign]
        self.recv_many = stream.recv_many  # type: ignore[method-assign]

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        self._s.send(obj, timeout=timeout)

    def send_many(self, objs: Any, *, timeout: float | None = None) -> None:
        self._s.send_many(objs, timeout=timeout)

    def recv(self, *, timeout: float | None = None) -> Any:
        return self._s.recv(timeout=timeout)

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        return self._s.recv_many(max_messages, timeout=timeout)

    def statistics(self) -> ChannelStatistics:
        return self._s.statistics()

    @property
    def closed(self) -> bool:
        return self._s.closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._s.peer

    def _close_after(self, exc: BaseException | None) -> None:
        self._pass_why()
        self._s._close_after(exc)

    def close(self) -> None:
        self._pass_why()
        self._s.close()

    def _pass_why(self) -> None:
        """Why request() closes this channel (``closed_because``, recorded on this object)
        is what the stream's ChannelClosed says."""
        why = self.__dict__.get(_CLOSED_BECAUSE)
        if why:
            closed_because(self._s, why)

    def __getattr__(self, name: str) -> Any:  # the stream's own state (tests, diagnostics)
        if name == "_s":
            raise AttributeError(name)
        return getattr(self._s, name)

    def __del__(self) -> None:
        """Dropped without close(): warn, and close the stream as close() does. In the
        dropping thread when the stream's lock is free; otherwise (the garbage collector ran
        in a thread that holds it) in the watchdog's thread, which takes it in turn.

        Not while the interpreter finalizes (the channel was a module global of a program
        that ended): grpcio's threads are stopped by then, some holding the locks a close
        needs, and the close waited for them for ever, so the program never exited. The
        process is ending: the server sees the connection go, as after a crash."""
        s = self.__dict__.get("_s")
        if s is None or s._closed or sys.is_finalizing():
            return
        if os.getpid() == s._owner:
            warnings.warn(
                f"unclosed gRPC channel {self.url!r}: the server is told it ended; close() "
                "it, or use 'with'",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )
        if s._lock.acquire(blocking=False):
            s._lock.release()
            s.close()
        else:
            _watchdog.after(0, s.close)


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
