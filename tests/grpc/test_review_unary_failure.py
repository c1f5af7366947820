"""gRPC review (rev-grpc): a unary call whose server handler fails before it replies is told
so, as a stream's client is (docs/errors.md, "Finished, or failed?")."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pytest
from tests._threads import BOUND

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel
from ipcwire.errors import ChannelBroken

DETAILS = "ipcwire: the channel ended after an error: ValueError raised while the channel was open"


def _failing(ch: Channel) -> None:
    for msg in ch:
        if msg == b"fail":
            raise ValueError("not for the client's eyes")
        ch.send(msg)


async def _afailing(ch: aio.AioChannel) -> None:
    async for msg in ch:
        if msg == b"fail":
            raise ValueError("not for the client's eyes")
        await ch.send(msg)


def _check(url: str) -> None:
    """What an ipcwire unary client and a plain grpcio client are told."""
    with ipcwire.connect(url, unary=True) as ch:
        with pytest.raises(ChannelBroken, match="ValueError raised") as info:
            ch.request(b"fail", timeout=BOUND)
        assert info.value.endpoint == url and "not for" not in str(info.value)
        assert ch.request(b"ok", timeout=BOUND) == b"ok"  # and the server serves on
    with grpc.insecure_channel(url.removeprefix("grpc://")) as gch:
        call = gch.unary_unary("/ipcwire.Channel/Call")
        with pytest.raises(grpc.RpcError) as err:
            call(b"fail", timeout=BOUND)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert err.value.details() == DETAILS
        assert call(b"ok", timeout=BOUND) == b"ok"


def test_blocking_listener() -> None:
    """The handler's ValueError ended the call with OK, an empty reply and the no-reply
    metadata: the ipcwire client said EndOfChannel ('handled the call but sent no reply'),
    and a plain gRPC client took an empty message for the answer."""
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:
        t = threading.Thread(target=lis.serve, args=(_failing,), daemon=True)
        t.start()
        _check(lis.url)
    t.join(BOUND)


def test_asyncio_listener() -> None:
    """The same on the asyncio listener."""

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0") as lis:
            serving: Any = asyncio.create_task(lis.serve(_afailing))
            await asyncio.to_thread(_check, lis.url)
            serving.cancel()

    asyncio.run(main())
