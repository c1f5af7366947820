"""The public conformance suite against anonymous pipes (blocking and asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from tests._loops import AioRun

from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.pipe import SPEC, ends, pair
from ipcwire.testing import acheck_channel, check_channel


@contextlib.contextmanager
def make_pair(**options: Any) -> Iterator[tuple[Channel, Channel]]:
    a, b = pair(**options)
    with a, b:
        yield a, b


@contextlib.contextmanager
def make_pair_handshake(**options: Any) -> Iterator[tuple[Channel, Channel]]:
    # Ends opened separately run the token handshake (the cross-process path).
    first, second = ends()
    box: list[Channel | BaseException] = []

    def server() -> None:
        try:
            box.append(second.open(**options))
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=server)
    t.start()
    try:
        a = first.open(**options)
    finally:
        t.join()
    b = box[0]
    if isinstance(b, BaseException):
        a.close()
        raise b
    with a, b:
        yield a, b


@contextlib.asynccontextmanager
async def amake_pair(**options: Any) -> AsyncIterator[tuple[AioChannel, AioChannel]]:
    first, second = ends()
    a, b = await asyncio.gather(first.aopen(**options), second.aopen(**options))
    async with a, b:
        yield a, b


def test_blocking_conformance() -> None:
    check_channel(make_pair, SPEC.capabilities)


def test_blocking_conformance_with_handshake() -> None:
    check_channel(make_pair_handshake, SPEC.capabilities)


def test_asyncio_conformance(aio_run: AioRun) -> None:
    aio_run(acheck_channel(amake_pair, SPEC.capabilities))
