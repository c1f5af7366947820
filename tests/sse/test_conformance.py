"""The conformance suite over Server-Sent Events (one-way: the server side sends)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.sse import SPEC
from ipcwire.testing import acheck_channel, check_channel

URL = "sse+http://127.0.0.1:0/events"


@contextlib.contextmanager
def pair(**options: Any) -> Iterator[tuple[Channel, Channel]]:
    """(server side, client side): the server's channel sends, the client receives."""
    with ipcwire.listen(URL, **options) as listener:
        client = ipcwire.connect(listener.url, timeout=10, **options)
        server = listener.accept(timeout=10)
        with client, server:
            yield server, client


@contextlib.asynccontextmanager
async def apair(**options: Any) -> AsyncIterator[tuple[AioChannel, AioChannel]]:
    async with await aio.listen(URL, **options) as listener:
        client = await aio.connect(listener.url, timeout=10, **options)
        server = await listener.accept(timeout=10)
        async with client, server:
            yield server, client


def test_blocking_conformance() -> None:
    check_channel(pair, SPEC.capabilities)


def test_asyncio_conformance(aio_run: AioRun) -> None:
    aio_run(acheck_channel(apair, SPEC.capabilities))
