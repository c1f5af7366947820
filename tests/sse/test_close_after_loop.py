"""close() of an asyncio SSE client or listener after its event loop has ended.

A channel or listener can outlive its loop (returned from ``asyncio.run()``, closed by an
``atexit`` hook). Its ``close()`` raised ``RuntimeError`` ("Event loop is closed" for the
client, "no running event loop" for the listener) and left its sockets open: the listener's
clients stayed connected to nothing. Now it closes without the loop: no exception, every
descriptor released; the client tells the server it is done (the DELETE, as the blocking
client sends it) and the listener's clients see their connection end at once.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from tests._loops import AioRun
from tests._proc import open_fds

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken

URL = "sse+http://127.0.0.1:0/events"


def test_an_asyncio_client_closed_after_its_loop_ended(aio_run: AioRun) -> None:
    before = open_fds()
    loop_fds: set[str] = set()
    with ipcwire.listen(URL) as lst:
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(lst.accept(timeout=10)), daemon=True)
        t.start()

        async def main() -> Any:
            loop_fds.update(open_fds())  # the loop's own (uvloop keeps its pipes until it goes)
            client = await aio.connect(lst.url, timeout=10)
            await asyncio.to_thread(t.join, 10)  # (it got the channel)
            got[0].send(b"ping")
            assert await client.recv(timeout=10) == b"ping"
            return client

        client = aio_run(main())
        with got[0] as server:
            client.close()  # raised RuntimeError: Event loop is closed
            assert client.closed
            client.close()  # twice is fine too
            with pytest.raises(ChannelBroken):  # the client released its stream
                server.send(b"after")
    assert open_fds() <= before | loop_fds


def test_an_asyncio_listener_closed_after_its_loop_ended(aio_run: AioRun) -> None:
    before = open_fds()
    loop_fds: set[str] = set()
    holder: list[Any] = []

    async def main() -> Any:
        loop_fds.update(open_fds())
        lst = await aio.listen(URL)
        accepting = asyncio.ensure_future(lst.accept(timeout=10))
        client = await asyncio.to_thread(ipcwire.connect, lst.url, timeout=10, retry_for=0)
        holder.append(client)
        server = await accepting
        await server.send(b"ping")
        assert await asyncio.to_thread(client.recv, timeout=10) == b"ping"
        return lst, server

    lst, server = aio_run(main())
    with holder[0] as client:
        server.close()
        lst.close()  # raised RuntimeError: no running event loop
        lst.close()
        with pytest.raises(ChannelBroken):  # its connection ended, and nothing listens
            client.recv(timeout=10)
    assert open_fds() <= before | loop_fds
