"""The public conformance suite against the file spool (a shared queue: the suite skips
"a peer's close ends the channel" by the end_of_channel capability). Without pickle: a spool
has no handshake, so it refuses token=, and with it pickle (test_token_refused.py)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.spool import SPEC
from ipcwire.testing import acheck_channel, check_channel

_n = itertools.count()
CODECS = ("bytes", "json", "msgpack")


@pytest.fixture
def make_pair(spool_dir: Path) -> Any:
    @contextlib.contextmanager
    def make(**options: Any) -> Iterator[tuple[Channel, Channel]]:
        url = f"spool://{spool_dir}/s{next(_n)}"
        with ipcwire.connect(url, **options) as a, ipcwire.connect(url, **options) as b:
            yield a, b

    return make


@pytest.fixture
def amake_pair(spool_dir: Path) -> Any:
    @contextlib.asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[tuple[AioChannel, AioChannel]]:
        url = f"spool://{spool_dir}/a{next(_n)}"
        async with await aio.connect(url, **options) as a, await aio.connect(url, **options) as b:
            yield a, b

    return make


def test_blocking_conformance(make_pair: Any) -> None:
    check_channel(make_pair, SPEC.capabilities, codecs=CODECS)


def test_asyncio_conformance(amake_pair: Any, aio_run: AioRun) -> None:
    aio_run(acheck_channel(amake_pair, SPEC.capabilities, codecs=CODECS))
