"""gRPC review (rev-grpc): a unary=True client whose server goes away and comes back."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from tests._threads import BOUND

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel
from ipcwire.errors import ConnectionRefused


def _echo(ch: Channel) -> None:
    for msg in ch:
        ch.send(msg)


@pytest.mark.parametrize("where", ["grpc://127.0.0.1:0", "grpc+unix"])
def test_a_unary_call_to_a_server_that_went_away_is_refused(where: str, sock_dir: Path) -> None:
    """Once a unary client had made a call, a later call to a server that had gone away said
    ChannelBroken ('<url> answered UNAVAILABLE: failed to connect to all addresses ...'): no
    server answered, nothing of the call was sent, and a first call in the same situation
    was ConnectionRefused with the fix. Both drivers."""
    url = f"grpc+unix://{sock_dir}/u.sock" if where == "grpc+unix" else where
    with ipcwire.listen(url) as lis:
        t = threading.Thread(target=lis.serve, args=(_echo,), daemon=True)
        t.start()
        client = ipcwire.connect(lis.url, unary=True)
        assert client.request(b"one", timeout=BOUND) == b"one"

        async def first() -> aio.AioChannel:
            ch = await aio.connect(lis.url, unary=True)
            assert await ch.request(b"one", timeout=BOUND) == b"one"
            return ch

        loop = asyncio.new_event_loop()
        aclient = loop.run_until_complete(first())
    t.join(BOUND)
    try:
        with pytest.raises(ConnectionRefused) as info:
            client.request(b"two", timeout=BOUND)
        assert info.value.endpoint == lis.url and "nothing is listening" in str(info.value)
        with pytest.raises(ConnectionRefused) as info:
            loop.run_until_complete(aclient.request(b"two", timeout=BOUND))
        assert info.value.endpoint == lis.url and "nothing is listening" in str(info.value)
    finally:
        client.close()
        loop.run_until_complete(aclient.aclose())
        loop.close()
