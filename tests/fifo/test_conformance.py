"""The public conformance suite against named pipes: one-way, and both ways with reply=."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.fifo import SPEC
from ipcwire.testing import acheck_channel, check_channel

ONE_WAY_CODECS = ("bytes", "json", "msgpack")  # pickle needs a token, a token needs reply=
BOTH_WAYS = dataclasses.replace(SPEC.capabilities, bidirectional=True)
_n = itertools.count()


@pytest.fixture
def fifo_url(sock_dir: Path) -> Callable[..., str]:
    def make(reply: bool = False) -> str:
        k = next(_n)
        url = f"fifo://{sock_dir}/f{k}.fifo"
        return f"{url}?reply={sock_dir}/r{k}.fifo" if reply else url

    return make


def _maker(fifo_url: Callable[..., str], reply: bool) -> Any:
    @contextlib.contextmanager
    def make_pair(**options: Any) -> Iterator[tuple[Channel, Channel]]:
        with ipcwire.listen(fifo_url(reply), **options) as listener:
            import threading

            box: list[Channel | BaseException] = []

            def accept() -> None:
                try:
                    box.append(listener.accept(timeout=10))
                except BaseException as exc:
                    box.append(exc)

            t = threading.Thread(target=accept)
            t.start()
            try:
                a = ipcwire.connect(listener.url, timeout=10, **options)
            finally:
                t.join()
            b = box[0]
            if isinstance(b, BaseException):
                a.close()
                raise b
            with a, b:
                yield a, b

    return make_pair


def _amaker(fifo_url: Callable[..., str], reply: bool) -> Any:
    @contextlib.asynccontextmanager
    async def make_pair(**options: Any) -> AsyncIterator[tuple[AioChannel, AioChannel]]:
        async with await aio.listen(fifo_url(reply), **options) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            a = await aio.connect(listener.url, timeout=10, **options)
            b = await accepting
            async with a, b:
                yield a, b

    return make_pair


def test_blocking_one_way(fifo_url: Callable[..., str]) -> None:
    check_channel(_maker(fifo_url, False), SPEC.capabilities, codecs=ONE_WAY_CODECS)


def test_blocking_both_ways_with_reply_fifo(fifo_url: Callable[..., str]) -> None:
    check_channel(_maker(fifo_url, True), BOTH_WAYS)


def test_asyncio_one_way(fifo_url: Callable[..., str], aio_run: AioRun) -> None:
    aio_run(acheck_channel(_amaker(fifo_url, False), SPEC.capabilities, codecs=ONE_WAY_CODECS))


def test_asyncio_both_ways_with_reply_fifo(fifo_url: Callable[..., str], aio_run: AioRun) -> None:
    aio_run(acheck_channel(_amaker(fifo_url, True), BOTH_WAYS))
