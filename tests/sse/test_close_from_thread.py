"""close() of an asyncio SSE client or listener from another thread, while its event loop
runs in its own (a worker thread, a signal handler's helper, a GUI thread).

The listener's raised ``RuntimeError: no running event loop`` and stayed open; the client's
touched the loop's objects (its event, the connection's transport, a new task) from the
wrong thread: asyncio's debug mode refuses that ("Non-thread-safe operation invoked on an
event loop other than the current one"), and without it a pending ``recv()`` was not woken
until something else woke the loop. Now both hand their close to the loop
(``call_soon_threadsafe``), as the blocking HTTP and SSE listeners hand theirs: no exception,
a pending ``recv()`` ends with ``ChannelClosed``, the listener's clients see the end, and
``aclose()`` in the loop waits for it all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from tests._loops import AioRun

from ipcwire import aio
from ipcwire.errors import ChannelBroken, ChannelClosed, ConnectionRefused, EndOfChannel

URL = "sse+http://127.0.0.1:0/events"


async def _in_thread(fn: Callable[[], object]) -> list[BaseException]:
    """Run ``fn`` in a new thread (not the loop's) and return what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    await asyncio.to_thread(t.join, 10)
    return errors


def test_a_client_closed_from_another_thread(aio_run: AioRun) -> None:
    async def main() -> None:
        asyncio.get_running_loop().set_debug(True)  # (uvloop: checks nothing, runs as usual)
        async with await aio.listen(URL) as lst:
            client = await aio.connect(lst.url, timeout=10)
            server = await lst.accept(timeout=10)
            await server.send(b"ping")
            assert await client.recv(timeout=10) == b"ping"
            pending = asyncio.ensure_future(client.recv(timeout=30))
            assert await _in_thread(client.close) == []
            assert client.closed
            with pytest.raises(ChannelClosed):
                await asyncio.wait_for(pending, 10)  # woken at once, not at the timeout
            await client.aclose()  # (waits for the DELETE that the close started)
            with pytest.raises(ChannelBroken, match="HTTP DELETE"):  # it released its stream
                await server.send(b"after")

    aio_run(main())


def test_a_listener_closed_from_another_thread(aio_run: AioRun) -> None:
    async def main() -> None:
        asyncio.get_running_loop().set_debug(True)
        lst = await aio.listen(URL)
        client = await aio.connect(lst.url, timeout=10)
        await lst.accept(timeout=10)
        waiting = asyncio.ensure_future(lst.accept(timeout=30))
        assert await _in_thread(lst.close) == []  # raised RuntimeError: no running event loop
        await lst.aclose()
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(EndOfChannel):  # its client saw the end
            await client.recv(timeout=10)
        await client.aclose()
        with pytest.raises(ConnectionRefused):  # and it listens no more
            await (await aio.connect(lst.url, timeout=10, reconnect=0)).recv(timeout=10)

    aio_run(main())
