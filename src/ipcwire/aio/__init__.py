"""ipcwire for asyncio: the blocking API's names, with ``await`` (native, not threads).

::

    from ipcwire import aio
    async with await aio.listen("unix:///run/user/1000/app.sock", codec="json") as server:
        await server.serve(handler)

    async with await aio.connect("tcp://127.0.0.1:7000") as ch:
        reply = await ch.request(b"ping", timeout=2)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ipcwire._api import _common
from ipcwire._core.codecs import Codec
from ipcwire._core.url import parse_url
from ipcwire._oserror import translated
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.options import (
    ChannelOptions,
    check_backlog,
    check_query,
    connect_timeout,
    query_connect_options,
)
from ipcwire.registry import lookup

if TYPE_CHECKING:
    from ipcwire.signals.aio import graceful_shutdown, terminate
    from ipcwire.spawn.aio import spawn, stdio
else:

    def __getattr__(name: str) -> Any:
        # spawn, stdio and the signal helpers load on first use: the stream drivers they are
        # built on import ipcwire.aio.channel, so importing them here would make a cycle
        # whenever a driver module is imported before this package.
        if name in ("spawn", "stdio"):
            from ipcwire.spawn import aio as spawn_aio

            return getattr(spawn_aio, name)
        if name in ("graceful_shutdown", "terminate"):  # as ipcwire.graceful_shutdown...
            from ipcwire.signals import aio as signals_aio

            return getattr(signals_aio, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AioChannel",
    "AioListener",
    "connect",
    "graceful_shutdown",
    "listen",
    "spawn",
    "stdio",
    "terminate",
]


async def connect(
    url: str,
    *,
    codec: str | Codec | None = None,
    framing: str | None = None,
    max_frame: int | None = None,
    token: str | bytes | None = None,
    timeout: float | None = None,
    **options: Any,
) -> AioChannel:
    """Connect to ``url``; the same options and errors as :func:`ipcwire.connect`."""
    endpoint = parse_url(url)
    spec = lookup(endpoint.scheme, url=endpoint.url)
    check_query(endpoint, spec.query_options)
    kw = _common(codec, framing, max_frame, token, options)
    opts = ChannelOptions.build(endpoint, kw)
    timeout = query_connect_options(endpoint, kw, timeout)
    if timeout is not None:
        kw["timeout"] = connect_timeout(timeout, endpoint.url)
    with translated(endpoint.url, "connecting to"):
        channel: AioChannel = await spec.load("aio").connect(endpoint, opts, **kw)
    return channel


async def listen(
    url: str,
    *,
    codec: str | Codec | None = None,
    framing: str | None = None,
    max_frame: int | None = None,
    token: str | bytes | None = None,
    **options: Any,
) -> AioListener:
    """Listen at ``url``; the same options and errors as :func:`ipcwire.listen`."""
    endpoint = parse_url(url)
    spec = lookup(endpoint.scheme, url=endpoint.url)
    check_query(endpoint, spec.query_options)
    kw = _common(codec, framing, max_frame, token, options)
    check_backlog(kw, endpoint.url)
    opts = ChannelOptions.build(endpoint, kw)
    with translated(endpoint.url, "listening on"):
        listener: AioListener = await spec.load("aio").listen(endpoint, opts, **kw)
    return listener
