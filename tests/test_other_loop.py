"""An asyncio channel used from another event loop than the one that opened it (made in one
``asyncio.run()``, used in the next) raises LocalProtocolError saying so, not asyncio's
RuntimeError "attached to a different loop" or "Event loop is closed" (every mechanism with
an asyncio channel that waits in its loop); its close() still works."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ipcwire import aio
from ipcwire.aio import AioChannel, AioListener
from ipcwire.errors import ChannelClosed, LocalProtocolError

_n = itertools.count()


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_a_channel_of_an_ended_loop_says_so(
    kind: str, unix_url: Callable[[], str], tcp_url: Callable[[], str]
) -> None:
    url = unix_url() if kind == "unix" else tcp_url()

    async def pair() -> tuple[AioListener, AioChannel, AioChannel]:
        lst = await aio.listen(url)
        accepting = asyncio.ensure_future(lst.accept(timeout=10))
        client = await aio.connect(lst.url, timeout=10)
        return lst, client, await accepting

    lst, client, server = asyncio.run(pair())

    async def use() -> None:
        with pytest.raises(LocalProtocolError, match=r"another event loop \(ended\)") as err:
            await server.recv(timeout=5)
        assert server.url in str(err.value) and "open it again" in str(err.value)
        with pytest.raises(LocalProtocolError, match="another event loop"):
            await client.request(b"x", timeout=5)

    asyncio.run(use())
    for c in (client, server, lst):
        c.close()


def _url(kind: str, sock_dir: str) -> str:
    n = next(_n)
    return {
        "shm": f"shm://iw-loop-{os.getpid()}-{n}",
        "mq": f"mq:///iw-loop-{os.getpid()}-{n}",
        "http": "http://127.0.0.1:0/loop",
        "ws": "ws://127.0.0.1:0/loop",
        "ws+unix": f"ws+unix://{sock_dir}/w{n}.sock",
    }[kind]


@pytest.mark.parametrize("kind", ["shm", "mq", "http", "ws", "ws+unix"])
def test_every_mechanism_says_so(kind: str, sock_dir: str) -> None:
    """What waits in the loop (recv, request; http's send, posted by the loop's task) says
    so; a send that needs no wait goes, as on unix/tcp. A closed channel says closed."""
    url = _url(kind, sock_dir)

    async def pair() -> tuple[AioListener, AioChannel, AioChannel]:
        lst = await aio.listen(url)
        accepting = asyncio.ensure_future(lst.accept(timeout=10))
        client = await aio.connect(lst.url, timeout=10)
        server = await accepting
        await client.send(b"hello", timeout=5)  # (http: the session exists on both ends)
        assert await server.recv(timeout=5) == b"hello"
        return lst, client, server

    lst, client, server = asyncio.run(pair())
    ends = (client,) if kind == "http" else (client, server)  # (http's server end is a thread's)

    async def use() -> None:
        for ch in ends:
            with pytest.raises(LocalProtocolError, match=r"another event loop \(ended\)") as err:
                await ch.recv(timeout=5)
            assert ch.url in str(err.value) and "open it again" in str(err.value)
            with pytest.raises(LocalProtocolError, match="another event loop"):
                await ch.recv_many(timeout=5)
        with pytest.raises(LocalProtocolError, match="another event loop"):
            await client.request(b"x", timeout=5)  # (sent, if the send needs no wait)
        if kind == "http":
            with pytest.raises(LocalProtocolError, match="another event loop"):
                await client.send(b"x", timeout=5)
            with pytest.raises(LocalProtocolError, match="another event loop"):
                await client.send_many([b"x"], timeout=5)
        client.close()
        with pytest.raises(ChannelClosed):  # closed wins
            await client.recv(timeout=5)
        with pytest.raises(ChannelClosed):
            await client.request(b"x", timeout=5)

    try:
        asyncio.run(use())
    finally:
        for c in (client, server, lst):
            c.close()


@pytest.mark.parametrize(("first", "then"), [("uvloop", "uvloop"), ("uvloop", "asyncio")])
def test_uvloop_channels_say_so_on_send_and_aclose_closes(
    first: str, then: str, unix_url: Callable[[], str]
) -> None:
    """uvloop's transport of an ended loop raised its own RuntimeError ("the handler is
    closed") on send() and request(); aclose() from another loop raised asyncio's "attached
    to a different loop" although it had closed the channel (helper-142)."""
    import uvloop

    def run(kind: str, coro: Coroutine[Any, Any, Any]) -> Any:
        return uvloop.run(coro) if kind == "uvloop" else asyncio.run(coro)

    url = unix_url()

    async def pair() -> tuple[AioListener, AioChannel, AioChannel]:
        lst = await aio.listen(url)
        accepting = asyncio.ensure_future(lst.accept(timeout=10))
        client = await aio.connect(lst.url, timeout=10)
        return lst, client, await accepting

    lst, client, server = run(first, pair())

    async def use() -> None:
        with pytest.raises(LocalProtocolError, match="another event loop"):
            await client.send(b"x")
        with pytest.raises(LocalProtocolError, match="another event loop"):
            await client.request(b"x", timeout=5)
        await client.aclose()
        assert client.closed

    run(then, use())
    for c in (server, lst):
        c.close()
