"""Server-Sent Events, asyncio driver: aiohttp serves in the running loop; the client reads
the stream with asyncio streams and the same I/O-free core as the blocking client."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._oserror import translate
from ipcwire._stream.retry import backoff_delays
from ipcwire.aio.channel import AcceptQueue, AioChannel, AioListener
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    LocalProtocolError,
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
from ipcwire.sse._server import SseServer

__all__ = ["AioSseClientChannel", "AioSseListener", "AioSseServerChannel", "connect", "listen"]

log = logging.getLogger("ipcwire")

_READ = 64 * 1024  # bytes per read of the event stream (and the stream reader's limit)


class AioSseClientChannel(AioChannel):
    """The receiving end of an event stream (asyncio)."""

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
        self._loop = asyncio.get_running_loop()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._receiving = False
        self._lost_at: float | None = None
        self._next_attempt: float | None = None
        self._last_failure: BaseException | None = None
        self._peer: PeerInfo | None = None

    # -- one connection ---------------------------------------------------------------------
    async def _open(self, deadline: float) -> None:
        core = self._core
        addr = core.addr
        url = self.url
        tls: dict[str, Any] = {}
        if addr.secure:
            tls = {
                "ssl": self._ssl or ssl_module.create_default_context(),
                "server_hostname": self._server_hostname or addr.host,
            }
        try:
            async with asyncio.timeout_at(deadline):
                reader, writer = await asyncio.open_connection(
                    addr.host, addr.port, limit=_READ, **tls
                )
        except TimeoutError as exc:
            raise Timeout(f"connecting to {url} timed out", endpoint=url) from exc
        except ssl_module.SSLError as exc:
            raise ChannelBroken(f"TLS handshake with {url} failed: {exc}", endpoint=url) from exc
        except OSError as exc:
            raise translate(exc, url, "connecting to") from exc
        if self._closed:
            writer.close()
            raise ChannelClosed(f"{url} is closed", endpoint=url)
        self._reader, self._writer = reader, writer
        try:
            writer.write(core.request())
            buf = bytearray()
            async with asyncio.timeout_at(deadline):
                while (parsed := parse_head(buf, url)) is None:
                    chunk = await reader.read(65536)
                    if not chunk:
                        raise ChannelBroken(
                            f"{url} closed the connection before answering", endpoint=url
                        )
                    buf += chunk
            head, size = parsed
            rest = bytes(buf[size:])
            open_ = core.accept_head(head, rest)
        except TimeoutError as exc:
            self._drop()
            raise Timeout(
                f"{url} did not answer within {self._connect_timeout} s", endpoint=url
            ) from exc
        except OSError as exc:
            self._drop()
            raise translate(exc, url, "connecting to") from exc
        except BaseException:
            self._drop()
            raise
        if not open_:
            self._drop()
            return
        peer = writer.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._peer = PeerInfo(address=f"{peer[0]}:{peer[1]}")
        self._lost_at = None
        core.feed(rest)

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
        out = [await self.recv(timeout=timeout)]
        core = self._core
        while core.has_message() and (max_messages is None or len(out) < max_messages):
            out.append(core.pop())
        return out

    async def _recv(self, timeout: float | None) -> Any:
        core = self._core
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
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
        try:
            async with asyncio.timeout_at(deadline):
                data = await reader.read(_READ)
        except TimeoutError:
            raise Timeout(
                f"no message from {self.url} within {timeout} s", endpoint=self.url
            ) from None
        except OSError as exc:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url) from None
            self._connection_lost(exc)
            return
        if not data:
            self._connection_lost(None)
            return
        try:
            self._core.feed(data)
        except RemoteProtocolError as exc:
            self._connection_lost(exc)
            return
        if self._core.body_done:
            self._connection_lost(None)

    def _connection_lost(self, exc: BaseException | None) -> None:
        self._drop()
        if self._core.final is not None or self._closed:
            return
        log.info("ipcwire: lost the event stream %s (%s); reconnecting", self.url, exc or "closed")
        self._last_failure = exc
        self._lost_at = self._loop.time()
        self._next_attempt = None

    async def _reconnect(self, deadline: float | None, timeout: float | None) -> None:
        core = self._core
        now = self._loop.time()
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
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass
            return
        self._next_attempt = None
        limit = self._connect_timeout
        if deadline is not None:
            limit = min(limit, max(deadline - now, 0.001))
        try:
            await self._open(now + limit)
        except FATAL as exc:
            core.final = exc
            raise
        except (ChannelBroken, Timeout) as exc:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url) from None
            self._last_failure = exc

    # -- the rest ---------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        raise one_way_error(self.url)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()  # a pending read sees EOF, then ChannelClosed

    async def aclose(self) -> None:
        writer = self._writer
        self.close()
        if writer is not None:
            try:
                async with asyncio.timeout(2.0):
                    await writer.wait_closed()
            except (TimeoutError, OSError):
                writer.transport.abort()

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
            dropped=core.dropped,
        )


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

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
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
            await self._append([data], size, timeout)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        datas, size = self._encode_all(objs)
        if datas:
            await self._append(datas, size, timeout)

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
                    async with asyncio.timeout_at(deadline):
                        await fut
                except TimeoutError:
                    raise self._full(timeout) from None
            if wake is not None:
                wake()
        self._bytes_sent += size

    async def recv(self, *, timeout: float | None = None) -> Any:
        raise one_way_error(self.url, server=True, closed=self._closed)

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
        self._shutdown: asyncio.Task[None] | None = None

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        return await self._ready.get(self.url, timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.stop_listening()
        self._shutdown = asyncio.get_running_loop().create_task(self._server.shutdown())
        self._ready.close()

    async def aclose(self) -> None:
        self.close()
        if self._shutdown is not None:
            await asyncio.shield(self._shutdown)

    @property
    def closed(self) -> bool:
        return self._closed


async def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioSseListener:
    """Serve event streams in the running loop; options as for the blocking
    :func:`ipcwire.sse.blocking.listen`.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError.
    """
    sock, settings, ssl, backlog = bind(endpoint, options, kw)
    ready: AcceptQueue[AioSseServerChannel] = AcceptQueue()
    server = new_server(settings, AioSseServerChannel, ready.put)
    try:
        await server.start(sock, ssl, backlog)
    except BaseException:
        sock.close()
        raise
    return AioSseListener(server, ready)
