"""Closing the asyncio HTTP and SSE objects after their event loop has ended.

A channel or listener can outlive the loop that made it (returned from ``asyncio.run()``,
closed by an ``atexit`` hook). Its ``close()`` then cannot run anything in the loop: a
transport's close schedules its end in the loop (``RuntimeError: Event loop is closed``),
and a task cannot start. So the sockets under the loop's transports are shut down and closed
here, without it (``ipcwire.aio._without_loop``): the peer sees the end of the connection at
once, and the descriptors are released. (uvloop closes every handle when its loop closes:
nothing is left to do then.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from ipcwire.aio._without_loop import drop_socket

__all__ = ["drop_connections", "loop_ended", "pool_sockets"]


def loop_ended(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether ``loop`` can no longer run anything (closed, or never known)."""
    return loop is None or loop.is_closed()


def drop_connections(web_server: Any) -> None:
    """Drop every connection of an aiohttp low-level server whose loop has ended."""
    if web_server is None:
        return
    for handler in web_server.connections:
        transport = handler.transport
        if transport is not None:
            drop_socket(transport.get_extra_info("socket"))


def pool_sockets(client: Any) -> Iterable[Any]:
    """The sockets of an ``httpx.AsyncClient``'s open connections (through httpcore's pool;
    none if its shape is not the one known here)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    for conn in getattr(pool, "connections", ()):
        stream = getattr(getattr(conn, "_connection", None), "_network_stream", None)
        if stream is not None:
            yield stream.get_extra_info("socket")
