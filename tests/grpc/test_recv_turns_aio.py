"""asyncio gRPC channels: a second task receiving while one already does is told so at once
(LocalProtocolError "another task is already receiving", as on the other asyncio channels),
and a second task's poll (recv(timeout=0)) is Timeout "no message ... yet", leaving the first
task's receive and the channel as they were.

Before, a poll while the first task read in its own task (its recv() reads grpc.aio's stream
directly, see grpc/_aio.py) started a reader task: a second grpc.aio read of the same stream
alongside the first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ipcwire import aio
from ipcwire.errors import LocalProtocolError, Timeout

BOUND = 10.0


def _stream(ch: Any) -> Any:
    """The AioStream under a channel (the client's is wrapped)."""
    return getattr(ch, "_s", ch)


async def _until(cond: Callable[[], bool]) -> None:
    """Until ``cond()`` (a bounded poll: nothing to wait on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while not cond():
        assert loop.time() < deadline, "the first task never started its read"
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("side", ["client", "server"])
def test_a_second_receiving_task_is_refused_at_once(side: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await aio.listen("grpc://127.0.0.1:0") as lst:
            accepting = asyncio.ensure_future(lst.accept(timeout=BOUND))
            async with (
                await aio.connect(lst.url, timeout=BOUND) as client,
                await accepting as server,
            ):
                ch, peer = (client, server) if side == "client" else (server, client)
                first = asyncio.ensure_future(ch.recv())
                # the first task reads grpc's stream in its own task
                await _until(lambda: _stream(ch)._direct is not None)
                start = loop.time()
                for call in (
                    lambda: ch.recv(timeout=5),
                    lambda: ch.recv_many(timeout=5),
                    ch.recv,
                ):
                    with pytest.raises(LocalProtocolError, match="another task is already"):
                        await call()
                assert loop.time() - start < 1.0
                for poll in (lambda: ch.recv(timeout=0), lambda: ch.recv_many(timeout=0)):
                    with pytest.raises(Timeout, match=r"no message from .* yet$"):
                        await poll()
                # one read of the stream: the first task's, still in its own task
                assert _stream(ch)._reader is None
                assert _stream(ch)._direct is not None
                assert not first.done()
                await peer.send(b"one")
                await peer.send(b"two")
                assert await asyncio.wait_for(first, BOUND) == b"one"
                assert await ch.recv(timeout=BOUND) == b"two"
                await peer.send(b"three")
                assert await ch.recv(timeout=BOUND) == b"three"

    asyncio.run(main())
