"""Server-Sent Events, asyncio driver: aiohttp serves in the running loop; the client reads
the stream with asyncio streams and the same I/O-free core as the blocking client."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._stream.retry import backoff_delays
from ipcwire.aio._read_size import bound_reads
from ipcwire.aio._timeouts import within, within_at
from ipcwire.aio._without_loop import drop_socket, running_elsewhere
from ipcwire.aio.channel import AcceptQueue, AioChannel, AioListener
from ipcwire.errors import (
    ChannelBroken,
    ConnectionRefused,
    LocalProtocolError,
    Timeout,
)
from ipcwire.http._after_loop import loop_ended
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
from ipcwire.sse._release import release_async, release_blocking
from ipcwire.sse._server import SseServer

__all__ = ["AioSseClientChannel", "AioSseListener", "AioSseServerChannel", "connect", "listen"]

_READ = 64 * 1024  # bytes per read of the event stream (and the stream reader's limit)
_YIELD_EVERY: Final = 64  # sends between two turns a server channel gives the event loop
# The DELETEs of closed clients still under way (close() does not wait for them)
_RELEASING: set[asyncio.Task[None]] = set()


class AioSseClientChannel(ClientChannelBase, AioChannel):
    """The receiving end of an event stream (asyncio)."""

    def __init__(
        self,
        core: ClientCore,
        *,
        connect_timeout: float,
        ssl: ssl_module.SSLContext | None,
        server_hostname: str | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        super().__init__(
            core,
            connect_timeout=connect_timeout,
            ssl=ssl,
            server_hostname=server_hostname,
            clock=self._loop.time,
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._wake = asyncio.Event()  # (set by close(): a reconnecting recv() stops waiting)
        self._close_done = False  # close()'s work is done (in the loop, or without it)
        self._receiving = False
        self._releasing: asyncio.Task[None] | None = None
        self._opening: asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None
        self._opening = None  # a connection being opened (close() cancels it)

    # -- one connection ---------------------------------------------------------------------
    async def _open(self, deadline: float) -> None:
        addr = self._core.addr
        tls: dict[str, Any] = {}
        if (ctx := self._tls()) is not None:
            tls = {"ssl": ctx[0], "server_hostname": ctx[1]}
        # In a task of its own, which close() cancels: a TLS handshake that hangs (a frozen
        # server's kernel still accepts) would otherwise hold recv() for the connect timeout.
        opening = self._loop.create_task(
            asyncio.open_connection(addr.host, addr.port, limit=_READ, **tls)
        )
        self._opening = opening
        try:
            async with within_at(deadline):
                reader, writer = await opening
        except OSError as exc:
            raise self._connect_error(exc) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                raise self._closed_error() from None  # close() cancelled the opening
            raise
        finally:
            self._opening = None
        if self._closed:
            writer.close()
            raise self._closed_error()
        self._reader, self._writer = reader, writer
        bound_reads(writer.transport)  # (ipcwire.aio._read_size)
        try:
            writer.write(self._core.request())
            buf = bytearray()
            answer = None
            async with within_at(deadline):
                while answer is None:
                    answer = self._answer(buf, await reader.read(65536))
        except OSError as exc:
            self._drop()
            raise self._answer_error(exc) from exc
        except BaseException:
            self._drop()
            raise
        open_, rest = answer
        if not open_:
            self._drop()
            return
        self._opened(writer.get_extra_info("peername"), rest)

    def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    # -- receiving --------------------------------------------------------------------------
    async def recv(self, *, timeout: float | None = None) -> Any:
        queue = self._queue
        if queue and not self._closed and not self._receiving:
            item = queue.popleft()  # the usual case: a message parsed already
            if type(item) is not Raise:
                return item
            queue.appendleft(item)  # for _recv to raise
        if self._receiving:
            raise LocalProtocolError(
                f"another task is already receiving on {self.url}; receive from one task"
            )
        self._receiving = True
        try:
            return await self._recv(timeout)
        finally:
            self._receiving = False

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        return self._more([await self.recv(timeout=timeout)], max_messages)

    async def _recv(self, timeout: float | None) -> Any:
        core = self._core
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            if self._closed:
                raise self._closed_error()
            if core.queue:
                return core.pop()
            if core.final is not None:
                raise core.final
            if self._reader is None:
                await self._reconnect(deadline, timeout)
            else:
                await self._read(self._reader, deadline, timeout)

    async def _read(
        self, reader: asyncio.StreamReader, deadline: float | None, timeout: float | None
    ) -> None:
        silent_at = self._silent_at()
        until = (
            deadline
            if silent_at is None or (deadline is not None and deadline < silent_at)
            else silent_at
        )
        try:
            async with within_at(until):
                data = await reader.read(_READ)
        except TimeoutError:
            if silent_at is not None and self._loop.time() >= silent_at:
                self._silence()
                return
            raise self._recv_timeout(timeout) from None
        except OSError as exc:
            if self._closed:
                raise self._closed_error() from None
            self._connection_lost(exc)
            return
        self._received(data)

    async def _reconnect(self, deadline: float | None, timeout: float | None) -> None:
        now = self._loop.time()
        wait = self._attempt_wait(now, deadline, timeout)
        if wait > 0:
            try:
                async with within(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass
            return
        try:
            await self._open(self._attempt_deadline(now, deadline))
        except FATAL as exc:
            self._core.final = exc
            raise
        except (ChannelBroken, Timeout) as exc:
            self._attempt_failed(exc)

    # -- the rest ---------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        raise one_way_error(self.url, closed=self._closed)

    def close(self) -> None:
        """Close the channel, and start telling the server this client is done with its
        stream (an HTTP DELETE, in a task of this loop: :meth:`aclose` waits for it)."""
        if self._closed:
            return
        self._closed = True
        if loop_ended(self._loop) or not self._loop.is_running():
            # ended, or stopped (not closed): a transport's close and the DELETE's task
            # would wait for a loop that may never run again
            self._close_without_loop()
            return
        if running_elsewhere(self._loop):  # (another thread: the loop's objects are its own)
            self._loop.call_soon_threadsafe(self._close_in_loop)
            return
        self._close_in_loop()

    def _close_in_loop(self) -> None:
        """The rest of :meth:`close`, in the running loop (once)."""
        if self._close_done:
            return
        self._close_done = True
        self._wake.set()
        if self._opening is not None:
            self._opening.cancel()  # a pending recv() connecting raises ChannelClosed
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()  # a pending read sees EOF, then ChannelClosed
        release = self._release()
        if release is not None and not self._loop.is_closed():
            task = self._loop.create_task(release_async(release))
            _RELEASING.add(task)  # (the loop keeps only a weak reference)
            task.add_done_callback(_RELEASING.discard)
            self._releasing = task

    def _close_without_loop(self) -> None:
        """``close()`` after the loop has ended (``ipcwire.http._after_loop``), or while it
        is stopped: the connection is dropped and the DELETE sent without the loop, as the
        blocking client sends it (bounded by ``RELEASE_TIMEOUT``)."""
        self._close_done = True
        if self._opening is not None and not self._loop.is_closed():
            self._opening.cancel()  # (if the loop runs again)
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            sock = writer.transport.get_extra_info("socket")
            if not self._loop.is_closed():
                writer.transport.abort()  # a stopped loop forgets the socket now
            drop_socket(sock)
        release = self._release()
        if release is not None:
            release_blocking(release)

    async def aclose(self) -> None:
        """Close the channel, and tell the server this client is done with its stream (the
        server ends it at once instead of keeping it for a resume): bounded, never raises."""
        writer = self._writer
        self.close()
        self._close_in_loop()  # (if close() was called in another thread: not done yet)
        if writer is not None:
            try:
                async with within(2.0):
                    await writer.wait_closed()
            except (TimeoutError, OSError):
                writer.transport.abort()
        if self._releasing is not None:
            await asyncio.shield(self._releasing)  # (bounded: RELEASE_TIMEOUT)


async def connect(
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
) -> AioSseClientChannel:
    """Open an event stream for reading; see :func:`ipcwire.aio.connect` and the docs page.

    Raises:
        The same errors as the blocking :func:`ipcwire.sse.blocking.connect`.
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
    ch = AioSseClientChannel(core, connect_timeout=limit, ssl=ssl, server_hostname=server_hostname)
    loop = asyncio.get_running_loop()
    retry_until = loop.time() + reconnect if reconnect else None
    delays = backoff_delays()
    while True:
        try:
            await ch._open(loop.time() + limit)
            return ch
        except ConnectionRefused:
            if retry_until is None or loop.time() >= retry_until:
                raise
            await asyncio.sleep(min(next(delays), max(retry_until - loop.time(), 0)))


# -- the serving side -----------------------------------------------------------------------
class AioSseServerChannel(ServerChannelBase, AioChannel):
    """The sending end of one client's stream (asyncio)."""

    _unyielded = 0  # sends since this channel last let the event loop run (see _pace)

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if (
            type(obj) is bytes
            and self._plain
            and len(obj) <= self._limit
            and not self._closed
            and self._stream.send_one(b64encode(obj))
        ):  # the usual case, inline: bytes through the bytes codec, base64 in the event
            self._bytes_sent += len(obj)
            self._unyielded += 1
            if self._unyielded >= _YIELD_EVERY:
                await self._pace()
            return
        payload = self._encode_payload(obj)
        if not self._send_now(payload):
            data, size = self._data(payload)
            await self._append([data], size, timeout)
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            await self._pace()

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        datas, size = self._encode_all(objs)
        if datas:
            await self._append(datas, size, timeout)
        await self._pace()

    async def _pace(self) -> None:
        """Let the event loop run once (every ``_YIELD_EVERY`` sends, and after each
        ``send_many``). While no client is attached a send never waits (events go to the
        replay buffer), so a task sending in a loop never gave the loop back: every other
        task of the loop stood still, the listener's own HTTP server included, so the
        client could not even come back to resume."""
        self._unyielded = 0
        await asyncio.sleep(0)

    async def _append(self, datas: list[bytes], size: int, timeout: float | None) -> None:
        s = self._stream
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        for batch, nbytes in batches(datas, s.max_events, s.max_bytes):
            while True:
                with s.lock:
                    self._check_open()
                    if s.has_room(len(batch), nbytes):
                        wake = s.append(batch)
                        break
                    fut: asyncio.Future[None] = loop.create_future()
                    s.aio_waiters.append(fut)
                try:
                    async with within_at(deadline):
                        await fut
                except BaseException as exc:  # a timeout, or cancelled: stop waiting
                    with s.lock:
                        if fut in s.aio_waiters:
                            s.aio_waiters.remove(fut)
                    if isinstance(exc, TimeoutError):
                        raise self._full(timeout) from None
                    raise
            if wake is not None:
                wake()
        self._bytes_sent += size

    async def recv(self, *, timeout: float | None = None) -> Any:
        """Wait for the stream to end: nothing is received on this side of an event stream
        (``await stream.recv()`` or ``async for _ in stream: pass`` is a handler's "until the
        client is gone").

        Raises:
            The same errors as the blocking :meth:`SseServerChannel.recv`.
        """
        s = self._stream
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with s.lock:
                error = self._recv_error()
                if error is not None:
                    raise error
                fut: asyncio.Future[None] = loop.create_future()
                s.gone_waiters.append(fut)
            try:
                async with within_at(deadline):
                    await fut
            except BaseException as exc:  # a timeout, or cancelled: stop waiting
                with s.lock:
                    if fut in s.gone_waiters:
                        s.gone_waiters.remove(fut)
                if isinstance(exc, TimeoutError):
                    raise self._still_there(timeout) from None
                raise

    async def _aclose_after(self, exc: BaseException | None) -> None:
        self._note_failure(exc)
        await self.aclose()

    async def aclose(self) -> None:
        self.close()


class AioSseListener(AioListener):
    """Serves event streams in the running loop; ``accept()`` returns one channel per new
    client stream."""

    def __init__(self, server: SseServer, ready: AcceptQueue[AioSseServerChannel]) -> None:
        self.url = server.url
        self._server = server
        self._ready = ready
        self._closed = False
        self._handed_over = False  # close() was called in another thread than the loop's
        self._shutdown: asyncio.Task[None] | None = None

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        return await self._ready.get(self.url, timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = self._server.loop
        if self._server.loop_ended:  # (ipcwire.http._after_loop)
            self._server.close_without_loop()
        elif self._server.loop_stopped:  # no task can start: the sockets go now
            self._server.close_while_stopped()
        elif running_elsewhere(loop):  # (another thread: the loop's objects are its own)
            assert loop is not None
            self._handed_over = True
            loop.call_soon_threadsafe(self._close_in_loop)
            return
        else:
            self._close_in_loop()
            return
        self._ready.close()

    def _close_in_loop(self) -> None:
        """Stop listening and start the shutdown, in the running serving loop (once)."""
        if self._shutdown is not None:
            return
        self._server.stop_listening()
        self._shutdown = asyncio.get_running_loop().create_task(self._server.shutdown())
        self._ready.close()

    async def aclose(self) -> None:
        self.close()
        if self._handed_over and not self._server.loop_ended:
            self._close_in_loop()  # (if the loop has not run the hand-over yet)
        if self._shutdown is not None:
            await asyncio.shield(self._shutdown)


async def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioSseListener:
    """Serve event streams in the running loop; options as for the blocking
    :func:`ipcwire.sse.blocking.listen`.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError.
    """
    sock, settings, ssl, backlog = bind(endpoint, options, kw)
    ready: AcceptQueue[AioSseServerChannel] = AcceptQueue()
    server = new_server(settings, AioSseServerChannel, ready.put, ready.qsize)
    try:
        await server.start(sock, ssl, backlog)
    except BaseException:
        sock.close()
        raise
    warn_if_plaintext(sock, settings, ssl)
    return AioSseListener(server, ready)
