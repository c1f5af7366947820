"""close() of an asyncio HTTP client or listener after its event loop has ended.

A channel or listener can outlive its loop (returned from ``asyncio.run()``, closed by an
``atexit`` hook). Its ``close()`` raised ``RuntimeError: no running event loop`` and left its
sockets open (and an http+unix listener its socket file). Now it closes without the loop:
no exception, every descriptor released, the socket file removed; the client tells the
server it is done (the DELETE, sent as the blocking client sends it), so the server's
channel ends at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun
from tests._proc import open_fds

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConnectionRefused, EndOfChannel


def _url(kind: str, tmp_path: Path) -> str:
    return f"http+unix://{tmp_path}/h.sock" if kind == "http+unix" else "http://127.0.0.1:0/"


@pytest.mark.parametrize("kind", ["http", "http+unix"])
def test_an_asyncio_client_closed_after_its_loop_ended(
    kind: str, tmp_path: Path, aio_run: AioRun
) -> None:
    before = open_fds()
    loop_fds: set[str] = set()
    with ipcwire.listen(_url(kind, tmp_path)) as lst:
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(lst.accept(timeout=10)), daemon=True)
        t.start()

        async def main() -> Any:
            loop_fds.update(open_fds())  # the loop's own (uvloop keeps its pipes until it goes)
            client = await aio.connect(lst.url, timeout=10)
            await client.send(b"ping")  # (posted by the channel's sender task)
            await asyncio.to_thread(t.join, 10)
            assert await asyncio.to_thread(got[0].recv, timeout=10) == b"ping"
            # The server has it, but the POST's answer may not have reached the client yet:
            # until it does, the message counts as undelivered (a close now tells the server
            # so, and its channel ends with ChannelBroken). Nothing to wait on: a bounded poll.
            deadline = time.monotonic() + 10
            while client._core.outbox and time.monotonic() < deadline:  # type: ignore[attr-defined]
                await asyncio.sleep(0.005)
            assert not client._core.outbox  # type: ignore[attr-defined]
            return client

        client = aio_run(main())
        with got[0] as server:
            client.close()  # raised RuntimeError: no running event loop
            assert client.closed
            client.close()  # twice is fine too
            with pytest.raises(EndOfChannel):  # the DELETE came
                server.recv(timeout=10)
    assert open_fds() <= before | loop_fds


@pytest.mark.parametrize("kind", ["http", "http+unix"])
def test_an_asyncio_listener_closed_after_its_loop_ended(
    kind: str, tmp_path: Path, aio_run: AioRun
) -> None:
    before = open_fds()
    loop_fds: set[str] = set()
    holder: list[Any] = []

    async def main() -> Any:
        loop_fds.update(open_fds())
        lst = await aio.listen(_url(kind, tmp_path))
        accepting = asyncio.ensure_future(lst.accept(timeout=10))
        client = await asyncio.to_thread(ipcwire.connect, lst.url, timeout=10)
        holder.append(client)
        server = await accepting
        await asyncio.to_thread(client.send, b"ping")
        assert await server.recv(timeout=10) == b"ping"
        return lst, server

    lst, server = aio_run(main())
    url = lst.url
    with holder[0]:
        server.close()
        lst.close()  # raised RuntimeError: no running event loop
        lst.close()
        with pytest.raises(ConnectionRefused):  # nothing listens there any more
            ipcwire.connect(url, timeout=10)
    assert list(tmp_path.iterdir()) == []  # (http+unix: the socket file is gone)
    assert open_fds() <= before | loop_fds
