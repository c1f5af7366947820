"""HTTP request/reply, blocking driver: ``connect``, ``listen`` and the listener.

The client is httpx's real synchronous client (no event loop); its channel,
:class:`~ipcwire.http._blocking_client.HttpChannel`, is in ``_blocking_client.py`` (a sender
thread, a reader thread, waiting). ``HttpChannel`` is still importable from here, as listed in
``__all__``: it is what ``connect`` returns. The listener runs aiohttp on a private
event-loop thread, because aiohttp only exists for asyncio; the application's side
(``accept``, ``recv``, ``send``) is ordinary blocking code: accepted channels are handed
over through a condition variable, and each channel's messages through a queue
(``_channels.py``).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import httpx

from ipcwire._core.url import Endpoint
from ipcwire._deadline import seconds_left
from ipcwire._oserror import unreachable, unreachable_cause
from ipcwire.channel import Channel, Listener
from ipcwire.errors import ChannelBroken, ChannelClosed, ConnectionRefused
from ipcwire.http._address import HttpAddress
from ipcwire.http._blocking_client import HttpChannel
from ipcwire.http._channels import ServerChannel
from ipcwire.http._connect import Redial, client_settings, dial, http_transport
from ipcwire.http._listen import (
    DEFAULT_SESSION_TIMEOUT,
    bind_endpoint,
    make_server,
    warn_if_plaintext,
)
from ipcwire.http._server import HttpServer
from ipcwire.http._sessions_cap import DEFAULT_MAX_SESSIONS
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, ChannelOptions
from ipcwire.ws._web import OriginPolicy

__all__ = ["HttpChannel", "HttpListener", "connect", "listen"]


class HttpListener(Listener):
    """An HTTP endpoint (blocking API): aiohttp on a private loop thread."""

    def __init__(self, addr: HttpAddress, server_factory: Any, cleanup: Any) -> None:
        self.url = addr.url()
        self._cleanup = cleanup
        self._cond = threading.Condition()
        self._ready: deque[Channel] = deque()
        self._closed = False
        self._owner = os.getpid()
        self._sock: Any = None  # the listening socket, once serving
        self._loop = asyncio.new_event_loop()
        self._server: HttpServer = server_factory(self._loop, self.url, self._enqueue)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"ipcwire {self.url}", daemon=True
        )
        self._thread.start()

    def _start(self, sock: Any, ssl_context: ssl.SSLContext | None) -> None:
        self._sock = sock
        fut = asyncio.run_coroutine_threadsafe(self._server.start(sock, ssl_context), self._loop)
        try:
            fut.result(DEFAULT_CONNECT_TIMEOUT)
        except BaseException:
            sock.close()
            self.close()
            raise

    def _enqueue(self, ch: Channel) -> None:  # on the loop thread
        with self._cond:
            if self._closed:
                ch.close()
                return
            self._ready.append(ch)
            self._cond.notify()

    def accept(self, *, timeout: float | None = None) -> Channel:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._closed:
                    raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
                self._cond.wait(
                    seconds_left(
                        deadline, f"no client connected to {self.url} within {timeout} s", self.url
                    )
                )
            if self._closed:
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
            return self._ready.popleft()

    @property
    def evicted(self) -> int:
        """Client channels ended early to make room for new ones (``max_sessions``)."""
        return self._server.evicted

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._server.stopping = True  # before serve() closes the channels in flight
            pending = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        if os.getpid() != self._owner:
            # A forked child closing its copy: the serving thread and its loop are the
            # parent's (they do not run here). Only let go of the listening socket.
            if self._sock is not None:
                self._sock.close()
            return
        for ch in pending:
            ch.close()
        if self._loop.is_running():
            try:
                # (it stops listening once its clients were told the end: shutdown)
                fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
                fut.result(3.0)
            except Exception:  # noqa: S110 - closing is best effort and bounded
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(3.0)
        if not self._thread.is_alive():
            self._loop.close()
        self._cleanup()


def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    ssl: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    session: bool = True,
    **kw: Any,
) -> HttpChannel:
    """Connect to an ipcwire HTTP endpoint (or, with ``session=False``, any HTTP endpoint
    that answers a body with a body); see :func:`ipcwire.connect` and docs/mechanisms/rest.md.

    Raises:
        ConnectionRefused, AuthenticationFailed, HandshakeError, Timeout, InvalidURL.
    """
    d = dial(
        endpoint, options, kw, timeout=timeout, session=session, server_hostname=server_hostname
    )
    core = d.core
    transport = http_transport(d, ssl)
    client = httpx.Client(transport=transport, **client_settings(d))
    ch = HttpChannel(core, client, d.peer)
    if not session:
        return ch
    redial = Redial(reconnect)
    try:
        while True:
            try:
                resp = ch._do(core.open_req(d.timeout), "connecting to")
            except ConnectionRefused:
                delay = redial.delay()
                if delay is None:
                    raise
                time.sleep(delay)
                continue
            except ChannelBroken as exc:  # an unreachable host: retried as a refusal is
                cause = unreachable_cause(exc)
                if cause is None:
                    raise
                delay = redial.delay()
                if delay is None:
                    raise unreachable(cause, core.url, reconnect=reconnect) from cause
                time.sleep(delay)
                continue
            core.opened(resp)
            return ch
    except BaseException:
        client.close()
        raise


def listen(
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
) -> HttpListener:
    """Serve an ipcwire HTTP endpoint; see :func:`ipcwire.listen` and docs/mechanisms/rest.md.

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

    def factory(loop: asyncio.AbstractEventLoop, url: str, enqueue: Any) -> HttpServer:
        return make_server(
            real,
            url,
            options,
            lambda s: ServerChannel(s, options.codec, url),
            enqueue,
            reply_timeout=reply_timeout,
            session_timeout=session_timeout,
            max_channels=max_channels,
            max_sessions=max_sessions,
            allow_uids=allow_uids,
            origins=policy,
        )

    try:
        listener = HttpListener(real, factory, cleanup)
    except BaseException:
        sock.close()
        cleanup()
        raise
    listener._start(sock, ssl)
    warn_if_plaintext(real, listener.url, options.token, ssl is not None)
    return listener
