"""Both drivers give the same errors in the same words when a send or a connect cannot go on
(the words live once, in _channel.py and _client.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, Timeout

PART_WAY = r"timed out part-way through a large message \(the peer is not reading\)"
OUT_OF_STEP = "the queue is out of step, so open a new channel"
NOBODY = (
    r"^the server at (\S+) is not accepting connections: nobody answered within 0\.2 s "
    r"\(its backlog of 1 clients waiting for accept\(\) is full: it is overloaded, or "
    r"stopped calling accept\(\); or the listening process is stopped or gone: ipcwire "
    r"doctor \1 tells\)\. Retry later, give connect\(\) a longer timeout=, or have the "
    r"server accept faster \(or listen with a larger backlog=\)$"
)
BACKLOG = (
    r"^the server at \S+ is not accepting connections: its queue of 1 waiting clients "
    r"stayed full for 0\.2 s \(it is overloaded, or stopped calling accept\(\)\)\. Retry "
    r"later, give connect\(\) a longer timeout=, or have the server accept faster \(or "
    r"listen with a larger backlog=\)$"
)
BIG = b"x" * 10_000  # ten pieces of 1 KiB; the peer's queue holds two


def test_blocking_send_stopped_part_way(mq_url: Callable[..., str]) -> None:
    url = mq_url("maxmsg=2&msgsize=1024")
    with ipcwire.listen(url) as listener:
        accepted: list[Any] = []
        t = threading.Thread(target=lambda: accepted.append(listener.accept(timeout=10)))
        t.start()
        client = ipcwire.connect(url, timeout=10)
        t.join()
        with client, accepted[0] as server:
            with pytest.raises(Timeout, match=PART_WAY) as err:
                client.send(BIG, timeout=0.1)
            assert err.value.endpoint == url
            with pytest.raises(ChannelBroken, match=OUT_OF_STEP):
                client.send(b"small")
            server.close()


def test_asyncio_send_stopped_part_way(mq_url: Callable[..., str]) -> None:
    url = mq_url("maxmsg=2&msgsize=1024")

    async def main() -> None:
        async with await aio.listen(url) as listener:
            client = await aio.connect(url, timeout=10)
            server = await listener.accept(timeout=10)
            async with client, server:
                with pytest.raises(Timeout, match=PART_WAY) as err:
                    await client.send(BIG, timeout=0.1)
                assert err.value.endpoint == url
                with pytest.raises(ChannelBroken, match=OUT_OF_STEP):
                    await client.send(b"small")
                await server.aclose()

    asyncio.run(main())


def test_blocking_connect_beyond_the_backlog(mq_url: Callable[..., str]) -> None:
    """The listener answers one client (backlog=1) that nobody accepts; the next one's
    announcement waits unread in its queue, which then has no room for a third."""
    url = mq_url("backlog=1")
    with ipcwire.listen(url) as listener, ipcwire.connect(url, timeout=5) as first:
        with pytest.raises(Timeout, match=NOBODY) as err:
            ipcwire.connect(url, timeout=0.2)  # its announcement now fills the queue
        assert err.value.endpoint == url
        with pytest.raises(Timeout, match=BACKLOG) as err:
            ipcwire.connect(url, timeout=0.2)
        assert err.value.endpoint == url
        with listener.accept(timeout=5) as server:
            first.send(b"still here")
            assert server.recv(timeout=5) == b"still here"


def test_asyncio_connect_beyond_the_backlog(mq_url: Callable[..., str]) -> None:
    url = mq_url("backlog=1")

    async def main() -> None:
        async with await aio.listen(url) as listener, await aio.connect(url, timeout=5) as first:
            with pytest.raises(Timeout, match=NOBODY) as err:
                await aio.connect(url, timeout=0.2)
            assert err.value.endpoint == url
            with pytest.raises(Timeout, match=BACKLOG) as err:
                await aio.connect(url, timeout=0.2)
            assert err.value.endpoint == url
            async with await listener.accept(timeout=5) as server:
                await first.send(b"still here")
                assert await server.recv(timeout=5) == b"still here"

    asyncio.run(main())
