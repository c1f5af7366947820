"""``async with ch.loaned(n) as buf:`` on an asyncio shm channel, as the blocking channel's
``with ch.loaned(n)``: sent as the block ends, given back when it raises or is cancelled.
(The asyncio channel had only ``loan()``; a body that raised left the loan open and every
later send refused.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest

import ipcwire
import ipcwire.aio
from ipcwire.shm.aio import AioShmChannel


@asynccontextmanager
async def aio_pair(url: str, **kw: Any) -> AsyncIterator[tuple[AioShmChannel, AioShmChannel]]:
    async with await ipcwire.aio.listen(url) as lst:
        client = await ipcwire.aio.connect(lst.url, timeout=10, **kw)
        async with client, await lst.accept(timeout=10) as server:
            assert isinstance(client, AioShmChannel) and isinstance(server, AioShmChannel)
            yield client, server


def test_loaned_sends_a_numpy_frame_as_the_block_ends(shm_url: Callable[[], str]) -> None:
    a = np.random.default_rng(3).random((480, 640), dtype=np.float32)[:, ::2]  # not contiguous

    async def main() -> None:
        async with aio_pair(shm_url(), capacity="4M") as (ch, other):
            async with ch.loaned(a.nbytes) as buf:
                np.copyto(np.frombuffer(buf, a.dtype).reshape(a.shape), a)
            view = await other.recv_view(timeout=10)
            assert np.array_equal(np.frombuffer(view, a.dtype).reshape(a.shape), a)
            other.release_view()

    asyncio.run(main())


def test_a_body_that_raises_sends_nothing_and_leaves_no_loan(shm_url: Callable[[], str]) -> None:
    async def main() -> None:
        async with aio_pair(shm_url()) as (ch, other):
            with pytest.raises(ValueError, match="different structures"):
                async with ch.loaned(64 * 64 * 4) as buf:
                    buf[:] = np.zeros((64, 64), np.float32)  # type: ignore[call-overload]
            await ch.send(b"next")  # no loan left open
            assert await other.recv(timeout=10) == b"next"  # and nothing sent before it

    asyncio.run(main())


def test_a_cancelled_body_gives_the_loan_back(shm_url: Callable[[], str]) -> None:
    async def main() -> None:
        async with aio_pair(shm_url()) as (ch, other):
            inside = asyncio.Event()

            async def fill() -> None:
                async with ch.loaned(1000) as buf:
                    buf[:5] = b"never"
                    inside.set()
                    await asyncio.Event().wait()  # until cancelled

            task = asyncio.create_task(fill())
            await inside.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await ch.send(b"after")
            assert await other.recv(timeout=10) == b"after"

    asyncio.run(main())


def test_loaned_waits_for_room_without_blocking_the_loop(shm_url: Callable[[], str]) -> None:
    """A loan the size of a free ring waits while the ring holds a message; the receiver, a
    task of the same loop, makes the room."""

    async def main() -> None:
        async with aio_pair(shm_url(), capacity="64K") as (ch, other):
            await ch.send(b"x" * 1000)
            big = 65536 - 16

            async def receive() -> bytes:
                first: bytes = await other.recv(timeout=10)
                view = await other.recv_view(timeout=10)
                got = bytes(view[:4])
                other.release_view()
                return first[:1] + got

            task = asyncio.create_task(receive())
            async with ch.loaned(big, timeout=10) as buf:
                buf[:4] = b"full"
            assert await task == b"xfull"

    asyncio.run(main())
