"""The public conformance suite against UDP (unreliable, unordered: the suite skips the
checks that need reliability)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from tests._loops import AioRun

from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.testing import SAMPLES, acheck_channel, check_channel
from ipcwire.udp import SPEC, pair
from ipcwire.udp.aio import pair as apair

CODECS = ("bytes", "json", "msgpack")  # pickle needs a token; UDP carries no handshake
# The suite's request check expects the peer's echo loop to end when the client closes; UDP
# cannot tell anyone that a socket closed, so it runs one way here and both ways below.
ONE_WAY = dataclasses.replace(SPEC.capabilities, bidirectional=False)


@contextlib.contextmanager
def make_pair(**options: Any) -> Iterator[tuple[Channel, Channel]]:
    a, b = pair(**options)
    with a, b:
        yield a, b


@contextlib.asynccontextmanager
async def amake_pair(**options: Any) -> AsyncIterator[tuple[AioChannel, AioChannel]]:
    a, b = await apair(**options)
    async with a, b:
        yield a, b


def test_blocking_conformance() -> None:
    check_channel(make_pair, ONE_WAY, codecs=CODECS)


def test_asyncio_conformance(aio_run: AioRun) -> None:
    aio_run(acheck_channel(amake_pair, ONE_WAY, codecs=CODECS))


def test_both_ways_and_request() -> None:
    with make_pair(codec="msgpack") as (a, b):
        for msg in SAMPLES["msgpack"]:
            a.send(msg, timeout=5)
            b.send(b.recv(timeout=5), timeout=5)
            assert a.recv(timeout=5) == msg
        t = threading.Thread(
            target=lambda: [b.send({"echo": b.recv(timeout=5)}) for _ in range(20)]
        )
        t.start()
        for i in range(20):
            assert a.request({"n": i}, timeout=5) == {"echo": {"n": i}}
        t.join()


async def _aboth_ways() -> None:
    async with amake_pair(codec="msgpack") as (a, b):
        for msg in SAMPLES["msgpack"]:
            await a.send(msg)
            await b.send(await b.recv(timeout=5))
            assert await a.recv(timeout=5) == msg


def test_asyncio_both_ways() -> None:
    asyncio.run(_aboth_ways())
