"""HTTP request/reply, asyncio driver: ``connect``, ``listen`` and the listener.

httpx.AsyncClient per channel; aiohttp on the caller's loop (native asyncio on both sides).
The client channel, :class:`~ipcwire.http._aio_client.AioHttpChannel`, is in
``_aio_client.py`` (a sender task, a reader task, closing). ``AioHttpChannel`` is still
importable from here, as listed in ``__all__``: it is what ``connect`` returns.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import httpx

from ipcwire._core.url import Endpoint
from ipcwire._oserror import unreachable, unreachable_cause
from ipcwire.aio._timeouts import within
from ipcwire.aio._without_loop import running_elsewhere
from ipcwire.aio.channel import AcceptQueue, AioChannel, AioListener
from ipcwire.errors import ChannelBroken, ConnectionRefused
from ipcwire.http._address import HttpAddress
from ipcwire.http._aio_client import AioHttpChannel
from ipcwire.http._channels import AioServerChannel
from ipcwire.http._connect import (
    Redial,
    aio_http_transport,
    client_settings,
    dial,
    http_transport,
)
from ipcwire.http._listen import (
    DEFAULT_SESSION_TIMEOUT,
    bind_endpoint,
    make_server,
    warn_if_plaintext,
)
from ipcwire.http._server import HttpServer
from ipcwire.http._sessions_cap import DEFAULT_MAX_SESSIONS
from ipcwire.options import DEFAULT_REQUEST_TIMEOUT, ChannelOptions
from ipcwire.ws._web import OriginPolicy

__all__ = ["AioHttpChannel", "AioHttpListener", "connect", "listen"]


class AioHttpListener(AioListener):
    """An HTTP endpoint (asyncio): aiohttp on the running loop."""

    def __init__(self, addr: HttpAddress, cleanup: Any) -> None:
        self.url = addr.url()
        self._cleanup = cleanup
        self._ready: AcceptQueue[AioChannel] = AcceptQueue()
        self._closed = False
        self._server: HttpServer | None = None
        self._shutdown: asyncio.Task[None] | None = None
        self._handed_over = False  # close() was called in another thread than the loop's
        self._stopped = False  # _close_in_loop ran

    def _enqueue(self, ch: AioChannel) -> None:
        if self._closed:
            ch.close()
            return
        self._ready.put(ch)

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        return await self._ready.get(self.url, timeout)

    @property
    def evicted(self) -> int:
        """Client channels ended early to make room for new ones (``max_sessions``)."""
        return 0 if self._server is None else self._server.evicted

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        server = self._server
        if server is not None:
            server.stopping = True  # before serve() closes the channels in flight
        loop = None if server is None else server.loop
        if server is not None and server.loop_ended:  # (ipcwire.http._after_loop)
            self._ready.close()
            server.close_without_loop()
        elif running_elsewhere(loop):  # (another thread: the loop's objects are its own)
            assert loop is not None
            self._handed_over = True
            loop.call_soon_threadsafe(self._close_in_loop)
        else:
            self._close_in_loop()
        self._cleanup()

    def _close_in_loop(self) -> None:
        """Stop listening and start the shutdown, in the serving loop (once). Called in
        another thread, it raised 'no running event loop' and went on listening."""
        if self._stopped:
            return
        self._stopped = True
        self._ready.close()
        server = self._server
        if server is not None:  # (it stops listening once its clients were told: shutdown)
            self._shutdown = asyncio.get_running_loop().create_task(server.shutdown())

    async def aclose(self) -> None:
        self.close()
        if self._handed_over and self._server is not None and not self._server.loop_ended:
            self._close_in_loop()  # (if the loop has not run the hand-over yet)
        if self._shutdown is not None:
            try:
                async with within(3.0):
                    await asyncio.shield(self._shutdown)
            except TimeoutError:
                pass


async def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    ssl: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    session: bool = True,
    **kw: Any,
) -> AioHttpChannel:
    """Connect to an HTTP endpoint; see :func:`ipcwire.aio.connect` and the blocking driver.

    Raises:
        ConnectionRefused, AuthenticationFailed, HandshakeError, Timeout, InvalidURL.
    """
    d = dial(
        endpoint, options, kw, timeout=timeout, session=session, server_hostname=server_hostname
    )
    core = d.core
    transport = aio_http_transport(d, ssl)
    client = httpx.AsyncClient(transport=transport, **client_settings(d, aio=True))
    ch = AioHttpChannel(
        core,
        client,
        d.peer,
        lambda: httpx.Client(
            transport=http_transport(d, ssl),
            **client_settings(d),
        ),
    )
    if not session:
        return ch
    redial = Redial(reconnect)
    try:
        while True:
            try:
                resp = await ch._do(core.open_req(d.timeout), "connecting to")
            except ConnectionRefused:
                delay = redial.delay()
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            except ChannelBroken as exc:  # an unreachable host: retried as a refusal is
                cause = unreachable_cause(exc)
                if cause is None:
                    raise
                delay = redial.delay()
                if delay is None:
                    raise unreachable(cause, core.url, reconnect=reconnect) from cause
                await asyncio.sleep(delay)
                continue
            core.opened(resp)
            ch.watch_loop_end()
            return ch
    except BaseException:
        await client.aclose()
        raise


async def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    ssl: ssl.SSLContext | None = None,
    backlog: int = 128,
    mode: int | None = None,
    allow_uids: Iterable[int] | None = None,
    origins: Iterable[str] | str | None = None,
    reply_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    session_timeout: float = DEFAULT_SESSION_TIMEOUT,
    max_channels: int = 1024,
    max_sessions: int | None = DEFAULT_MAX_SESSIONS,
    **kw: Any,
) -> AioHttpListener:
    """Serve an HTTP endpoint on the running loop; see :func:`ipcwire.aio.listen`.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError.
    """
    policy = OriginPolicy.build(origins, endpoint.url)  # (refused before anything is bound)
    sock, real, cleanup = bind_endpoint(
        endpoint,
        kw,
        backlog=backlog,
        mode=mode,
        allow_uids=allow_uids,
        max_sessions=max_sessions,
        tls=ssl is not None,
    )
    listener = AioHttpListener(real, cleanup)
    url = listener.url
    try:
        server = make_server(
            real,
            url,
            options,
            lambda s: AioServerChannel(s, options.codec, url),
            listener._enqueue,
            reply_timeout=reply_timeout,
            session_timeout=session_timeout,
            max_channels=max_channels,
            max_sessions=max_sessions,
            allow_uids=allow_uids,
            origins=policy,
        )
        await server.start(sock, ssl)
    except BaseException:
        sock.close()
        cleanup()
        raise
    listener._server = server
    warn_if_plaintext(real, url, options.token, ssl is not None)
    return listener
