"""An asyncio channel used from another event loop than the one that opened it (made in one
``asyncio.run()``, used in the next) raises LocalProtocolError saying so, not asyncio's
RuntimeError "attached to a different loop" (unix, tcp); its close() still works."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ipcwire import aio
from ipcwire.aio import AioChannel, AioListener
from ipcwire.errors import LocalProtocolError


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_a_channel_of_an_ended_loop_says_so(
    kind: str, unix_url: Callable[[], str], tcp_url: Callable[[], str]
) -> None:
    url = unix_url() if kind == "unix" else tcp_url()

    async def pair() -> tuple[AioListener, AioChannel, AioChannel]:
        lst = await aio.listen(url)
        accepting = asyncio.ensure_future(lst.accept(timeout=10))
        client = await aio.connect(lst.url, timeout=10)
        return lst, client, await accepting

    lst, client, server = asyncio.run(pair())

    async def use() -> None:
        with pytest.raises(LocalProtocolError, match=r"another event loop \(ended\)") as err:
            await server.recv(timeout=5)
        assert server.url in str(err.value) and "open it again" in str(err.value)
        with pytest.raises(LocalProtocolError, match="another event loop"):
            await client.request(b"x", timeout=5)

    asyncio.run(use())
    for c in (client, server, lst):
        c.close()
