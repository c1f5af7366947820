"""close() of an asyncio gRPC listener from another thread, while its event loop runs in its
own: the listener took it for a close after its loop's end, kept its server without stopping
it, and the port went on taking connections ("coroutine 'AioServer.shutdown' was never
awaited" at exit; found by helper-88). Now it hands its close to the loop, as the SSE and
HTTP listeners do: no exception, a pending accept() ends with ChannelClosed, aclose() waits
for the server's stop, and nothing listens there any more."""

from __future__ import annotations

import asyncio
import threading

import pytest
from tests._loops import AioRun

from ipcwire import aio
from ipcwire.errors import ChannelClosed, ConnectionRefused


def test_a_listener_closed_from_another_thread(aio_run: AioRun) -> None:
    async def main() -> None:
        asyncio.get_running_loop().set_debug(True)
        lst = await aio.listen("grpc://127.0.0.1:0")
        waiting = asyncio.ensure_future(lst.accept(timeout=30))
        errors: list[BaseException] = []

        def close() -> None:
            try:
                lst.close()
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=close)
        t.start()
        await asyncio.to_thread(t.join, 10)
        assert errors == []
        await lst.aclose()
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(ConnectionRefused):  # it listens no more (it did before)
            await aio.connect(lst.url, timeout=5)

    aio_run(main())
