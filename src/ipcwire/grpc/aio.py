"""gRPC, asyncio driver: ``grpc.aio`` on both sides (native asyncio). This module opens channels
and listens; the client channels are ``_aio_channels.py``'s."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import weakref
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._oserror import unreachable, unreachable_cause
from ipcwire._stream.retry import backoff_delays
from ipcwire.aio._timeouts import within
from ipcwire.aio._without_loop import running_elsewhere
from ipcwire.aio.channel import AcceptQueue, AioChannel, AioListener
from ipcwire.channel import (
    PeerInfo,
)
from ipcwire.errors import (
    ChannelBroken,
    ConfigurationError,
    ConnectionRefused,
    IpcwireError,
    RemoteProtocolError,
)
from ipcwire.grpc._address import (
    GrpcAddress,
    backlog_is_full,
    channel_options,
    file_mode,
    resolve,
)
from ipcwire.grpc._aio import AioOneShot, AioStream
from ipcwire.grpc._aio_channels import LINGERING, AioGrpcStreamChannel, AioGrpcUnaryChannel
from ipcwire.grpc._channel import CONNECT_KW, EXIT_WAIT, LINGER, LISTEN_KW
from ipcwire.grpc._grpcio import ensure_descriptors, ensure_threads, grpc
from ipcwire.grpc._keepalive import Keepalive
from ipcwire.grpc._protocol import (
    BYE,
    MAX_FRAME_KEY,
    NO_REPLY_KEY,
    STREAM,
    check_welcome,
    client_cancelled,
    client_metadata,
    connect_timed_out,
    error_from_status,
    failed_bye,
    failure_details,
    lost_client,
    metadata_dict,
    reads_batches,
)
from ipcwire.grpc._server import ServerCore, bind_server, warn_if_plaintext
from ipcwire.grpc._tls import client_credentials
from ipcwire.options import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    ChannelOptions,
    reject_unknown,
)
from ipcwire.unix._socket import backlog_delays, backlog_full

__all__ = ["AioGrpcListener", "AioGrpcStreamChannel", "AioGrpcUnaryChannel", "connect", "listen"]

# How often a closed client's linger looks whether a recv() still reads in its own task
# (close() hands that read to the reader task when the recv() task next runs).
DIRECT_POLL: Final = 0.01
# The event loops of the open listeners: a client's aclose() there does not wait for its
# server to read the goodbye (that server may be this loop's, which reads once it returns).
_SERVING: weakref.WeakKeyDictionary[AioGrpcListener, asyncio.AbstractEventLoop] = (
    weakref.WeakKeyDictionary()
)


_DEAD_SERVERS: list[Any] = []  # see AioGrpcListener.close() and _watch_loop()


def _keep_unless_stopped(server: Any, stopped: list[bool]) -> None:
    """A listener was collected: a server it did not stop must never be (see _watch_loop)."""
    if not stopped[0]:
        _DEAD_SERVERS.append(server)


_STATUS_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _ended_status(call: Any) -> tuple[Any, str | None]:
    """The status of a grpc.aio call that is over (in its done callback), without awaiting:
    grpc.aio's own ``__await__`` reads the same attribute (grpcio 1.85). ``(None, None)``
    where it is not there."""
    status = getattr(getattr(call, "_cython_call", None), "_status", None)
    if status is None:
        return None, None
    return _STATUS_CODES.get(status.code()), status.details()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class AioGrpcListener(AioListener):
    """A gRPC endpoint (asyncio) on a ``grpc.aio`` server."""

    def __init__(self, url: str, core: ServerCore, cleanup: Any) -> None:
        self.url = url
        self._core = core
        self._cleanup = cleanup
        self._ready: AcceptQueue[AioChannel] = AcceptQueue()
        self._closed = False
        self.server: Any = None
        self._stopping: asyncio.Task[Any] | None = None
        self._guard: asyncio.Task[None] | None = None
        self._stopped = [False]  # the server stopped inside its loop (shared with a finalizer)
        self._handed_over = False  # close() was called in another thread than the loop's
        self._closed_here = False  # _close_here ran

    def _watch_loop(self, server: Any) -> None:
        """Make sure the server is stopped inside its loop, or never collected.

        grpc.aio's Server.__del__ waits for ever once its loop is gone (grpcio 1.85): a
        listener left open when ``asyncio.run()`` returned wedged the process at its next
        garbage collection. asyncio.run() (and Runner.close()) cancel the tasks still pending
        before closing the loop: the guard task closes the listener then. A loop closed by
        hand cancels nothing: a server not stopped is then kept, never collected."""
        self._guard = asyncio.get_running_loop().create_task(
            self._close_at_loop_end(), name=f"ipcwire: closes {self.url} when its loop ends"
        )
        weakref.finalize(self, _keep_unless_stopped, server, self._stopped)

    async def _close_at_loop_end(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        except asyncio.CancelledError:
            if not self._closed:
                await self.aclose()
            raise

    def _enqueue(self, ch: AioChannel) -> None:
        if self._closed:
            ch.close()
        else:
            self._ready.put(ch)

    def _discard(self, ch: AioChannel) -> None:
        """``ch``'s RPC is over (its client cancelled, died or stopped waiting): if nobody
        accepted it yet, it leaves the accept queue (dead channels do not pile up there while
        nobody accepts, nor are handed out by accept())."""
        if self._ready.discard(ch):
            ch.close()

    async def stream(self, request_iterator: Any, context: Any) -> None:
        adm = self._core.admit(context.invocation_metadata())
        if adm.error is not None:
            self._core.refused(context, adm.error)
            await context.abort(*adm.error)
        await context.send_initial_metadata(adm.initial)
        ch = AioStream(
            self.url, self._core.codec, adm.send_limit, self._core.peer(context),
            read=context.read, write=context.write, client=False,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        ch.rpc_over = loop.create_future()

        async def finish() -> None:  # the application closed: end the RPC with OK
            if not done.done():
                done.set_result(None)

        ch.on_close = finish

        def on_read_done(_: object) -> None:  # an ipcwire client closed: end the RPC
            if not done.done():
                done.set_result(None)

        ch.batches = adm.batches
        ch.expect_bye = adm.bye
        ch.half_close_ends = adm.ipcwire
        if adm.ipcwire:
            ch.read_done.add_done_callback(on_read_done)
        self._enqueue(ch)
        try:
            await done
        except asyncio.CancelledError:
            # grpc.aio cancels the handler with the RPC: the client went away (its process
            # or connection died, or it cancelled), or this listener is stopping
            ch.ended(lost_client(self.url) if adm.ipcwire else client_cancelled(self.url))
            raise
        finally:
            if not ch.rpc_over.done():
                ch.rpc_over.set_result(None)
            ch.stop_reader()
            ch.ended(ChannelBroken(f"the stream of {self.url} is over", endpoint=self.url))
            self._discard(ch)
        if ch.fail_reason:  # the application's with block or handler failed: say so
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details(failure_details(ch.fail_reason))

    async def call(self, request: bytes, context: Any) -> bytes:
        adm = self._core.admit(context.invocation_metadata())
        if adm.error is not None:
            self._core.refused(context, adm.error)
            await context.abort(*adm.error)
        ch = AioOneShot(
            self.url, self._core.codec, request, self._core.peer(context), adm.send_limit
        )
        self._enqueue(ch)
        wait = self._core.reply_wait(context.time_remaining())
        gone = ChannelBroken(f"the caller of {self.url} stopped waiting", endpoint=self.url)
        try:
            async with within(wait):
                await asyncio.shield(ch.done)
        except TimeoutError:
            ch.caller_gone(gone)
            self._discard(ch)
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the server application sent no reply within {wait} s",
            )
        except asyncio.CancelledError:
            ch.caller_gone(gone)
            self._discard(ch)
            raise
        refusal = ch.refusal()
        if refusal is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)
        failed = ch.failure()  # the handler failed before it replied: say so, as a stream
        if failed is not None:
            await context.abort(grpc.StatusCode.INTERNAL, failed)
        # The limit and the token's proof go in the trailing metadata: a unary call has
        # nothing to wait for before the reply, and it is sent with the status anyway.
        if ch.reply is None:
            context.set_trailing_metadata((*adm.initial, (NO_REPLY_KEY, "1")))
            return b""
        context.set_trailing_metadata(adm.initial)
        return ch.reply

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        return await self._ready.get(self.url, timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        home = None if self._guard is None else self._guard.get_loop()
        if running_elsewhere(home):  # (another thread: the loop's objects are its own)
            # Before, this went on as after the loop's end: the server was kept, never
            # stopped, and its port stayed open ("AioServer.shutdown was never awaited").
            assert home is not None
            self._handed_over = True
            home.call_soon_threadsafe(self._close_here)
            return
        self._close_here()

    def _close_here(self) -> None:
        """The rest of :meth:`close`, in the server's loop (once), or where no loop runs."""
        if self._closed_here:
            return
        self._closed_here = True
        try:
            self._ready.close()
            loop = _running_loop()
            current = None if loop is None else asyncio.current_task()
            guard = self._guard
            if loop is None and guard is not None:
                # The server's loop stopped (run_until_complete() returned), not closed: its
                # server stops when that loop runs again (aclose() there waits for it).
                home = guard.get_loop()
                if not home.is_closed() and not home.is_running():
                    loop = home
            if guard is not None and loop is guard.get_loop() and guard is not current:
                guard.cancel()
            if self.server is not None and loop is not None:
                self._stopping = loop.create_task(self.server.stop(0.5))
                self._stopping.add_done_callback(lambda _: self._stopped.__setitem__(0, True))
            elif self.server is not None:
                # Called after the loop ended (asyncio.run() returned): the server went with
                # it, and the socket file is all there is left to remove. grpc.aio's
                # Server.__del__ hangs for ever when its loop is gone (grpcio 1.85), so the
                # dead server is kept, never collected.
                _DEAD_SERVERS.append(self.server)
        finally:
            _SERVING.pop(self, None)
            self._core.close_log()
            self._cleanup()

    async def aclose(self) -> None:
        self.close()
        if self._handed_over:
            self._close_here()  # (if the loop has not run the hand-over yet)
        # A serve() in this loop ends its channels cleanly meanwhile (the server's stop
        # gives their RPCs a grace period): wait for it, as a graceful shutdown ends the loop
        # next, which would cancel their handlers.
        await self._served()
        if self._stopping is not None:
            # (asyncio.wait, not within() around shield(): at the end of asyncio.run() the
            # timeout's object was found cleared, "'Timeout' object has no attribute
            # '_state'", a traceback on stderr at exit, in some runs, not in others; with the
            # garbage collector off it never came. Waiting needs no object of its own here.)
            await asyncio.wait([self._stopping], timeout=3.0)


def _open_channel(
    addr: GrpcAddress, options: ChannelOptions, tls: dict[str, Any], keepalive: Keepalive
) -> Any:
    hostname = tls.pop("server_hostname", None)
    creds = client_credentials(options.url, tls=addr.scheme == "grpcs", **tls)
    opts = channel_options(options.max_frame, hostname) + keepalive.client_options()
    ensure_descriptors(options.url)
    ensure_threads(options.url)
    if creds is not None:
        return grpc.aio.secure_channel(addr.target(), creds, options=opts)
    return grpc.aio.insecure_channel(addr.target(), options=opts)


async def connect(
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
) -> AioChannel:
    """Connect to an ipcwire gRPC endpoint; see :func:`ipcwire.aio.connect` and the blocking
    driver.

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
        gch = _open_channel(addr, options, tls, keepalive)
        return AioGrpcUnaryChannel(url, options, gch, md, nonce, reconnect)
    limit = DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout
    start = time.monotonic()
    delays = backoff_delays()
    busy_delays = backlog_delays()
    while True:
        gch = _open_channel(addr, options, dict(tls), keepalive)
        try:
            # each attempt has timeout= to be answered (reconnect= bounds the retries)
            stream = await _open_stream(
                gch, url, options, md, nonce, time.monotonic() + limit, (limit, reconnect)
            )
            stream.watch_loop_end()
            return AioGrpcStreamChannel(stream)
        except ConnectionRefused as exc:
            await gch.close()
            # busy, not gone (its backlog is full, or was until just now): try again until
            # the timeout
            if backlog_is_full(addr, exc):
                left = start + limit - time.monotonic()
                if left <= 0:
                    raise backlog_full(url, limit) from exc
                await asyncio.sleep(min(next(busy_delays), left))
                continue
            left = start + (reconnect or 0) - time.monotonic()
            if left <= 0:
                if reconnect:
                    raise ConnectionRefused(
                        f"{exc} (kept trying for {reconnect} s)", endpoint=url
                    ) from exc
                raise
            await asyncio.sleep(min(next(delays), left))
        except ChannelBroken as exc:
            # no route to the host (grpcio's words): as tcp://, retried under reconnect=
            await gch.close()
            lost = unreachable_cause(exc)
            if lost is None:
                raise
            left = start + (reconnect or 0) - time.monotonic()
            if left <= 0:
                if reconnect:
                    raise unreachable(lost, url, reconnect=reconnect) from lost
                raise
            await asyncio.sleep(min(next(delays), left))
        except BaseException:
            await gch.close()
            raise


async def _open_stream(
    gch: Any,
    url: str,
    options: ChannelOptions,
    md: Any,
    nonce: bytes,
    deadline: float,
    timeouts: tuple[float, float | None],
) -> AioStream:
    call = gch.stream_stream(STREAM)(metadata=md)
    try:
        async with within(max(deadline - time.monotonic(), 0.0)):
            initial = metadata_dict(await call.initial_metadata())
    except TimeoutError:
        call.cancel()
        raise connect_timed_out(url, *timeouts) from None
    if MAX_FRAME_KEY not in initial:
        # Refused (no headers, only a status: it says why), or not ipcwire. Headers without
        # our limit in them are a server that is not ipcwire: no status to wait for.
        code = details = None
        if not initial:
            try:
                async with within(max(deadline - time.monotonic(), 0.5)):
                    code, details = await call.code(), await call.details()
            except TimeoutError:
                pass
        call.cancel()
        if code is not None and code != grpc.StatusCode.OK:
            raise error_from_status(code, details, url, doing="connecting")
        raise RemoteProtocolError(f"{url} is not an ipcwire gRPC endpoint", endpoint=url)
    try:
        send_limit = check_welcome(initial, options, url, nonce)
    except IpcwireError:
        call.cancel()
        raise
    ch = AioStream(
        url, options.codec, send_limit, PeerInfo(address=url),
        read=call.read, write=call.write, client=True,
    )  # fmt: skip
    ch.batches = reads_batches(initial)

    loop = asyncio.get_running_loop()
    over: asyncio.Future[None] = loop.create_future()

    def rpc_over(_: object) -> None:
        ch.call_done(*_ended_status(call))
        if not over.done():
            over.set_result(None)

    call.add_done_callback(rpc_over)

    def reader_reads() -> bool:
        reader = ch._reader
        return reader is not None and not reader.done()

    async def linger() -> None:
        """The server ends the RPC when it reads our half-close; then the gRPC channel goes.
        Meanwhile what it still sends is read and dropped, so that flow control does not
        hold its writes (and the end of its RPC) behind a client that left. One that never
        ends the RPC is cancelled after LINGER seconds. Never a second grpc.aio read of the
        stream alongside one under way: the reader task's (it reads to the end), or a
        recv()'s in its own task (``ch._direct``: close() hands that read to the reader task
        when the recv() task next runs; until then, look again in a moment)."""
        try:
            async with within(LINGER):
                while not over.done() and not reader_reads():
                    if ch._direct is not None:
                        await asyncio.wait([over], timeout=DIRECT_POLL)
                        continue
                    if await call.read() is grpc.aio.EOF:
                        break
                await over
        except (TimeoutError, asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        finally:
            ch.stop_reader()
            call.cancel()
            await gch.close()

    async def release() -> None:
        try:
            if ch.batches:  # the goodbye (_protocol): a close, or a failure; not a lost client
                await call.write(failed_bye(ch.fail_reason) if ch.fail_reason else BYE)
            await call.done_writing()
        except Exception:  # noqa: S110 - the RPC is already over: nothing to half-close
            pass
        task = loop.create_task(linger())
        LINGERING.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(LINGERING.discard)
        # aclose() returns once the server has ended the RPC (read the goodbye), for at most
        # EXIT_WAIT: the loop's end (asyncio.run() returning) cancels grpc.aio's own tasks
        # and the RPC with them, which could drop the goodbye before the server read it,
        # and the server would take the clean close for a lost client. Not where a listener
        # serves in this loop: the server may be that one, and read once this returns.
        if loop not in _SERVING.values():
            await asyncio.wait([over], timeout=EXIT_WAIT)

    ch.on_close = release
    ch.on_close_without_loop = call.cancel
    return ch


async def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    client_ca: str | os.PathLike[str] | None = None,
    credentials: Any = None,
    mode: int | None = None,
    max_channels: int = 1024,
    reply_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    **kw: Any,
) -> AioGrpcListener:
    """Serve an ipcwire gRPC endpoint on the running loop; see :func:`ipcwire.aio.listen`.

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
    server = grpc.aio.server(options=core.server_options(), maximum_concurrent_rpcs=max_channels)
    tls = {"certfile": certfile, "keyfile": keyfile, "client_ca": client_ca,
           "credentials": credentials}  # fmt: skip
    url, cleanup = bind_server(server, addr, endpoint.url, tls, socket_mode)
    core.url = url
    listener = AioGrpcListener(url, core, cleanup)
    _SERVING[listener] = asyncio.get_running_loop()
    server.add_generic_rpc_handlers((core.handlers(listener.stream, listener.call),))
    await server.start()
    listener.server = server
    listener._watch_loop(server)
    warn_if_plaintext(addr, url, options.token)
    return listener
