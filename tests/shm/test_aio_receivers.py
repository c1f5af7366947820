"""The asyncio shm channel's receives as every other mechanism's: a second task receiving
while one waits is refused at once (LocalProtocolError), not queued until the first's call
ends (it was ``Timeout: another task's call on this channel did not finish in time``); a
receive that times out gives its seconds; ``timeout=nan`` is a ConfigurationError."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

import ipcwire.aio
from ipcwire.errors import ConfigurationError, LocalProtocolError, Timeout
from ipcwire.shm.aio import AioShmChannel


@asynccontextmanager
async def aio_pair(url: str) -> AsyncIterator[tuple[AioShmChannel, AioShmChannel]]:
    async with await ipcwire.aio.listen(url) as lst:
        client = await ipcwire.aio.connect(lst.url, timeout=10)
        async with client, await lst.accept(timeout=10) as server:
            assert isinstance(client, AioShmChannel) and isinstance(server, AioShmChannel)
            yield client, server


def test_a_second_receiver_is_refused_at_once(shm_url: Callable[[], str]) -> None:
    async def main() -> None:
        async with aio_pair(shm_url()) as (ch, other):
            first = asyncio.ensure_future(ch.recv(timeout=10))
            await asyncio.sleep(0)  # (the first task now waits)
            for second in (ch.recv, ch.recv_many, ch.recv_view):
                start = time.monotonic()
                with pytest.raises(LocalProtocolError, match="another task is already receiving"):
                    await second(timeout=5)
                assert time.monotonic() - start < 3  # (not its timeout of 5 s)
            await other.send(b"m", timeout=5)
            assert await first == b"m"  # the first receiver got it: nothing lost
            await other.send(b"n", timeout=5)
            assert await ch.recv(timeout=5) == b"n"  # and receiving goes on
            # senders still take turns (documented): two at once both go
            await asyncio.gather(ch.send(b"a", timeout=5), ch.send(b"b", timeout=5))
            got = [await other.recv(timeout=5), await other.recv(timeout=5)]
            assert sorted(got) == [b"a", b"b"]

    asyncio.run(main())


def test_a_timeout_gives_its_seconds_and_nan_is_refused(shm_url: Callable[[], str]) -> None:
    async def main() -> None:
        async with aio_pair(shm_url()) as (ch, _):
            with pytest.raises(Timeout, match=rf"no message from {ch.url} within 0.2 s$"):
                await ch.recv(timeout=0.2)
            with pytest.raises(Timeout, match=rf"no message from {ch.url} within 0.2 s$"):
                await ch.recv_many(timeout=0.2)
            with pytest.raises(Timeout, match=rf"no message from {ch.url} yet$"):
                await ch.recv(timeout=0)
            with pytest.raises(ConfigurationError, match="timeout=nan"):
                await ch.recv(timeout=float("nan"))

    asyncio.run(main())
