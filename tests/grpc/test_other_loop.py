"""An asyncio gRPC channel used in another event loop than the one that opened it (made in
one asyncio.run(), used in the next): LocalProtocolError saying to open it in the loop that
uses it, as unix and tcp say. Before: ChannelBroken wrapping asyncio's RuntimeError (the
write's task was attached to a different loop), which read like a peer's failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ipcwire import aio
from ipcwire.errors import LocalProtocolError

BOUND = 10.0
WORDS = r"belongs to another event loop \(ended\).*open it again in this one"


def test_stream_and_unary_channels_in_a_second_loop() -> None:
    async def make() -> tuple[Any, ...]:
        srv = await aio.listen("grpc://127.0.0.1:0", codec="json")
        c = await aio.connect(srv.url, codec="json", timeout=BOUND)
        p = await srv.accept(timeout=BOUND)
        u = await aio.connect(srv.url, codec="json", unary=True)
        return srv, c, p, u

    srv, c, p, u = asyncio.run(make())

    async def use() -> None:
        for ch in (c, p):
            with pytest.raises(LocalProtocolError, match=WORDS):
                await ch.send({"x": 1})
            with pytest.raises(LocalProtocolError, match=WORDS):
                await ch.send_many([{"x": 1}])
            with pytest.raises(LocalProtocolError, match=WORDS):
                await ch.recv(timeout=BOUND)
        with pytest.raises(LocalProtocolError, match=WORDS):
            await c.request({"x": 1}, timeout=BOUND)
        with pytest.raises(LocalProtocolError, match=WORDS):
            await u.request({"x": 1}, timeout=BOUND)

    asyncio.run(use())
    for x in (c, p, u, srv):
        x.close()
