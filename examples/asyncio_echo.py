"""The same API with asyncio: native protocols, no threads."""

from __future__ import annotations

import asyncio

from ipcwire import aio


async def main() -> None:
    async with await aio.listen("tcp://127.0.0.1:0", codec="json") as server:

        async def handle(ch: aio.AioChannel) -> None:
            async for msg in ch:
                await ch.send({"echo": msg})

        serving = asyncio.ensure_future(server.serve(handle))
        async with await aio.connect(server.url, codec="json") as ch:
            print(await ch.request({"hello": "asyncio"}, timeout=2))
            await ch.send_many([1, 2, 3])
            print(await ch.recv(timeout=2), await ch.recv(timeout=2), await ch.recv(timeout=2))
        server.close()
        await serving


asyncio.run(main())
