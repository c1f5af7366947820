"""The check that a held asyncio listener is not closed by the collector (mq and shm): one the
program holds keeps answering through collections, and its close() gives no warning."""

from __future__ import annotations

import asyncio
import gc
import warnings

from ipcwire import aio


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
