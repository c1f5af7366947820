"""An asyncio connect() cancelled at any point (asyncio.wait_for, a TaskGroup, timeout())
raises only the cancellation: the handshake it left behind must not surface later as an
ERROR "Future exception was never retrieved" in the loop's log (tcp gave 4 to 26 per 100
cancelled connects), and the listener serves the next client."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import pytest
from tests._loops import AioRun

from ipcwire import aio
from ipcwire.errors import IpcwireError


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_a_cancelled_connect_leaves_no_unretrieved_error(
    kind: str, aio_run: AioRun, unix_url: Callable[[], str], tcp_url: Callable[[], str]
) -> None:
    url = unix_url() if kind == "unix" else tcp_url()
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context))
        async with await aio.listen(url) as lst:
            cancelled = 0
            for i in range(150):  # deadlines spread over every step of the connect
                try:
                    ch = await asyncio.wait_for(aio.connect(lst.url), 0.0001 * (i % 20))
                except TimeoutError:
                    cancelled += 1
                else:
                    await ch.aclose()
            assert cancelled > 0
            gc.collect()  # (a future's unretrieved error is reported when it is freed)
            await asyncio.sleep(0)
            accepting = asyncio.ensure_future(lst.accept(timeout=10))
            async with await aio.connect(lst.url, timeout=10) as client:
                await client.send(b"ping")
                # (the clients let in before cancelled ones are queued: find this one's)
                while True:
                    server = await accepting
                    try:
                        if await server.recv(timeout=0.2) == b"ping":
                            break
                    except IpcwireError:  # a cancelled client's: it went away
                        pass
                    await server.aclose()
                    accepting = asyncio.ensure_future(lst.accept(timeout=10))
                await server.aclose()
        gc.collect()

    aio_run(main())
    assert [c.get("message") for c in reported] == []
