"""Dropped and held asyncio listeners (unix, tcp, mq, shm): the notebook cell that drops a
listener, a bounded poll of the loop's turns for its close, and the check that a held one is
not closed by the collector."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable

from ipcwire import aio
from ipcwire.errors import Timeout


async def lose_listener(url: str) -> None:
    """The notebook cell: listen, wait for a client that never comes, keep nothing."""
    try:
        await (await aio.listen(url)).accept(timeout=0.05)
    except Timeout:
        pass


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> bool:
    """A bounded poll of the loop's turns (a dropped listener's close runs at a next turn)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def held_listener_warnings(url: str) -> list[warnings.WarningMessage]:
    """Listen at ``url``, collect, make a round trip through it, close it: the
    ResourceWarnings seen meanwhile (none is right)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        listener = await aio.listen(url)
        gc.collect()
        await asyncio.sleep(0)
        client = await aio.connect(url, timeout=5)
        async with client, await listener.accept(timeout=5) as server:
            await client.send(b"x")
            assert await server.recv(timeout=5) == b"x"
        listener.close()
        del listener
        gc.collect()
    return [w for w in seen if issubclass(w.category, ResourceWarning)]
