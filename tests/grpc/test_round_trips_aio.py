"""asyncio gRPC round trips, one message at a time (each send() after a recv(), each recv()
with no timeout): the paths a request and its reply take on both sides, written at once in
the caller's task and read in the receiver's own task (docs/mechanisms/grpc.md). Whatever a
message looks like, it arrives whole, and the statistics count it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ipcwire import aio

MARKER = b"\xc1ipcwB\x00\x01"  # the batch marker (docs/mechanisms/grpc.md, "Batches")
BYTES = [b"", MARKER, MARKER + b"x", MARKER[:4], b"\xc1", b"x" * 64, bytes(range(256)) * 300]
OBJECTS: list[Any] = [None, "", {"a": [1, 2.5, "\xc1ipcwB"]}, "x" * 5000, [], 0]


@pytest.mark.parametrize("codec", ["bytes", "json"])
def test_ping_pong_through_the_direct_paths(codec: str) -> None:
    messages = BYTES if codec == "bytes" else OBJECTS

    async def main() -> tuple[list[Any], list[Any], Any, Any]:
        async with (
            await aio.listen("grpc://127.0.0.1:0", codec=codec) as lis,
            await aio.connect(lis.url, codec=codec, timeout=10) as c,
            await lis.accept(timeout=10) as s,
        ):

            async def echo() -> list[Any]:
                seen = []
                for _ in messages:
                    m = await s.recv()
                    seen.append(m)
                    await s.send(m)
                return seen

            server = asyncio.ensure_future(echo())
            replies = []
            for m in messages:
                await c.send(m)
                replies.append(await c.recv())
            seen = await asyncio.wait_for(server, 10)
            return replies, seen, c.statistics(), s.statistics()

    replies, seen, cs, ss = asyncio.run(main())
    assert replies == messages and seen == messages
    n = len(messages)
    assert (cs.messages_sent, cs.messages_received) == (n, n)
    assert (ss.messages_sent, ss.messages_received) == (n, n)
    assert cs.bytes_sent == cs.bytes_received == ss.bytes_sent == ss.bytes_received > 0
