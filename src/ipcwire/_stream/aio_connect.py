"""The asyncio connect loop shared by stream-socket mechanisms: retries, handshake."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ipcwire._oserror import no_answer, translate
from ipcwire._stream.aio import AioStreamChannel
from ipcwire._stream.aio_protocol import StreamProtocol
from ipcwire._stream.connect import DEFAULT_CONNECT_TIMEOUT, connect_error, retried
from ipcwire._stream.handshake import silent_server
from ipcwire._stream.retry import backoff_delays
from ipcwire.aio._timeouts import within
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelBroken, IpcwireError
from ipcwire.options import ChannelOptions

__all__ = ["aio_connect_stream", "client_connect"]


async def aio_connect_stream(
    options: ChannelOptions,
    create: Callable[[Callable[[], StreamProtocol]], Any],
    explain: Callable[[OSError], IpcwireError | None],
    *,
    timeout: float | None,
    reconnect: float | None,
    peer: Callable[[Any], PeerInfo],
    timed_out: Callable[[], IpcwireError | None] | None = None,
    handshake_hint: str = "",
) -> AioStreamChannel:
    """Connect with ``create`` (retrying refusals for ``reconnect`` seconds, with backoff and
    jitter), run the handshake, and return the channel. ``explain(exc)`` gives the driver's
    own words for a failed connect (None: the usual ones). ``timed_out()``, when given, may name
    the reason the timeout passed (a unix listener's full backlog). ``handshake_hint``: as
    for :func:`~ipcwire._stream.connect.connect_stream`."""
    url = options.url
    loop = asyncio.get_running_loop()
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    retry_until = loop.time() + reconnect if reconnect else None
    delays = backoff_delays()
    while True:
        connected: list[float] = []  # when the connection was taken, if it was
        start = loop.time()
        try:
            async with within(limit):
                return await client_connect(options, create, peer, connected.append)
        except TimeoutError as exc:
            if isinstance(exc, IpcwireError):
                raise
            why = timed_out() if timed_out is not None else None
            if why is not None:
                raise why from exc
            if connected:  # the handshake got no answer, as on the blocking API
                raise silent_server(url, limit - (connected[0] - start), options) from exc
            raise no_answer(url, limit, reconnect) from exc
        except OSError as exc:
            explained = explain(exc)
            err = explained or translate(exc, url, "connecting to")
            if retry_until is not None and retried(err, exc):
                now = loop.time()
                if now < retry_until:
                    await asyncio.sleep(min(next(delays), retry_until - now))
                    continue
                raise connect_error(exc, explained, url, reconnect) from exc
            raise connect_error(exc, explained, url, None) from exc
        except ChannelBroken as exc:
            # The server went away between accepting and answering (a reset, or end of
            # stream: restarting, killed): within reconnect=, as a refusal, try again.
            if type(exc) is not ChannelBroken:
                raise
            hint = handshake_hint if connected else ""
            if retry_until is None:
                if hint:
                    raise ChannelBroken(f"{exc}{hint}", endpoint=url) from (exc.__cause__ or exc)
                raise
            now = loop.time()
            if now >= retry_until:
                raise ChannelBroken(
                    f"{exc}{hint} (kept trying for {reconnect} s)", endpoint=url
                ) from exc
            await asyncio.sleep(min(next(delays), retry_until - now))


async def client_connect(
    options: ChannelOptions,
    create: Callable[[Callable[[], StreamProtocol]], Any],
    peer: Callable[[Any], PeerInfo],
    on_connected: Callable[[float], object] | None = None,
) -> AioStreamChannel:
    """Open one connection with ``create(protocol_factory)`` and run the client handshake;
    ``on_connected(loop time)`` once the connection is made, before the handshake."""
    loop = asyncio.get_running_loop()
    ch = AioStreamChannel(options.url, options.wire())
    ch.refusal_possible = not options.client_handshake().needed
    done: asyncio.Future[None] = loop.create_future()

    def ready(_: AioStreamChannel) -> None:
        if not done.done():
            done.set_result(None)

    def failed(err: IpcwireError) -> None:
        if not done.done():
            done.set_exception(err)

    proto = StreamProtocol(
        ch,
        options.client_handshake(goodbye=True),
        ready,
        failed,
        handshake_timeout=options.handshake_timeout,
        half_close=True,
    )
    try:
        transport, _ = await create(lambda: proto)
    except BaseException:
        # (cancelled, or failed, after the connection was made: its handshake's error, set
        # when the transport is closed, would go unread and be logged "never retrieved")
        if not done.done():
            done.cancel()
        raise
    if on_connected is not None:
        on_connected(loop.time())
    try:
        try:
            ch._peer = peer(transport.get_extra_info("socket"))
        except OSError:
            # (EBADF: the server closed at once, and the transport with it, before this
            # ran: the handshake's own error below says what happened)
            if not done.done():
                raise
        await done
    except BaseException:
        transport.abort()
        if done.done() and not done.cancelled():
            done.exception()  # failed too: this error says it (no "never retrieved" noise)
        raise
    return ch
