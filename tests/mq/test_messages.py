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
NOBODY = r"the listener is busy or gone \(its queue exists, nobody accepted\)"
BACKLOG = r"waiting clients is full \(listen with a larger backlog=, or accept faster\)"
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


def test_blocking_connect_nobody_accepts_then_backlog_full(mq_url: Callable[..., str]) -> None:
    url = mq_url("backlog=1")
    with ipcwire.listen(url):
        with pytest.raises(Timeout, match=NOBODY):
            ipcwire.connect(url, timeout=0.2)  # its announcement now fills the backlog
        with pytest.raises(Timeout, match=BACKLOG) as err:
            ipcwire.connect(url, timeout=0.2)
        assert err.value.endpoint == url


def test_asyncio_connect_nobody_accepts_then_backlog_full(mq_url: Callable[..., str]) -> None:
    url = mq_url("backlog=1")

    async def main() -> None:
        # The asyncio listener answers handshakes on its own (accept() takes channels already
        # open); a blocking one answers only in accept(), so nobody answers here.
        with ipcwire.listen(url):
            with pytest.raises(Timeout, match=NOBODY):
                await aio.connect(url, timeout=0.2)
            with pytest.raises(Timeout, match=BACKLOG) as err:
                await aio.connect(url, timeout=0.2)
            assert err.value.endpoint == url

    asyncio.run(main())
