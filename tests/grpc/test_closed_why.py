"""After a request() that timed out or was cancelled closed a gRPC channel, the next call's
ChannelClosed says why (as unix, tcp and spawn do). Before, it said only "URL is closed",
though nobody on that thread closed it."""

from __future__ import annotations

import asyncio

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelClosed, Timeout

BOUND = 10.0


def test_blocking_request_timed_out() -> None:
    with ipcwire.listen("grpc://127.0.0.1:0", codec="json") as srv:
        c = ipcwire.connect(srv.url, codec="json", timeout=BOUND)
        with pytest.raises(Timeout):
            c.request(1, timeout=0.05)  # the server never answers
        with pytest.raises(ChannelClosed, match=r"got no reply within 0.05 s and closed it"):
            c.send(2)
        with pytest.raises(ChannelClosed, match=r"got no reply within 0.05 s and closed it"):
            c.recv(timeout=BOUND)


@pytest.mark.parametrize("unary", [False, True])
def test_asyncio_request_cancelled(unary: bool) -> None:
    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0", codec="json") as srv:
            c = await aio.connect(srv.url, codec="json", timeout=BOUND, unary=unary)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.request(1, timeout=BOUND), 0.05)
            with pytest.raises(ChannelClosed, match=r"was cancelled .* and closed it"):
                await c.send(2)
            with pytest.raises(ChannelClosed, match=r"was cancelled .* and closed it"):
                await c.recv(timeout=BOUND)
            if not unary:
                c2 = await aio.connect(srv.url, codec="json", timeout=BOUND)
                with pytest.raises(Timeout):
                    await c2.request(1, timeout=0.05)
                with pytest.raises(ChannelClosed, match=r"got no reply within 0.05 s"):
                    await c2.recv()
                await c2.aclose()
            await c.aclose()

    asyncio.run(main())
