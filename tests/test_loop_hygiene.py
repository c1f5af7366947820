"""An asyncio listener and its channels, once closed, leave the event loop watching nothing.

A closed fd the loop still watches breaks the loop for whoever gets that fd number next: the
shm listener's close left its socket watched, and the next asyncio listener or connection in
the same loop was never woken (tcp and ws connects after an shm pair timed out). Every
connection-oriented asyncio driver is checked here, after a round trip and a close.
grpc.aio's own completion-queue poller stays registered for the life of the loop (grpc's,
opened once per loop, not per channel): it is the one fd allowed to appear.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from ipcwire import aio


def _name() -> str:
    return f"ipcwh-{uuid.uuid4().hex[:10]}"


URLS: dict[str, Callable[[Path], str]] = {
    "unix": lambda d: f"unix://{d}/u.sock",
    "tcp": lambda d: "tcp://127.0.0.1:0",
    "shm": lambda d: f"shm://{_name()}",
    "mq": lambda d: f"mq://{_name()}",
    "udp": lambda d: "udp://127.0.0.1:0",
    "ws": lambda d: "ws://127.0.0.1:0/x",
    "ws+unix": lambda d: f"ws+unix://{d}/w.sock",
    "http+unix": lambda d: f"http+unix://{d}/h.sock",
    "grpc": lambda d: "grpc://127.0.0.1:0",
}


@pytest.mark.parametrize("kind", sorted(URLS))
def test_closing_leaves_the_loop_watching_no_closed_fd(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        selector = loop._selector  # type: ignore[attr-defined]
        before = set(selector.get_map())
        async with await aio.listen(URLS[kind](tmp_path)) as lst:
            accepting = asyncio.ensure_future(lst.accept(timeout=10))
            async with await aio.connect(lst.url, timeout=10) as client:
                await client.send(b"ping")
                async with await accepting as server:
                    assert await server.recv(timeout=10) == b"ping"
                    await server.send(b"pong")
                    assert await client.recv(timeout=10) == b"pong"
        # Checked at once, before the loop runs again: a watched fd already closed is the
        # hazard (the next socket may get its number before the loop unwatches it).
        closed = {}
        for fd in set(selector.get_map()) - before:
            try:
                os.fstat(fd)
            except OSError:
                closed[fd] = repr(selector.get_map()[fd].data)[:100]
        assert not closed, f"the loop still watches these closed fds: {closed}"
        await asyncio.sleep(0)  # and once it ran what the closes scheduled, nothing at all
        left = {
            fd: repr(selector.get_map()[fd].data)[:100]
            for fd in set(selector.get_map()) - before
            if not (kind == "grpc" and "PollerCompletionQueue" in repr(selector.get_map()[fd].data))
        }
        assert not left, f"the loop still watches: {left}"

    asyncio.run(main())
