"""close() of an asyncio listener from another thread, while its event loop runs in its own
(a worker thread, a signal handler's helper, a GUI thread): it hands the close to the loop,
as the SSE listener does (tests/sse/test_close_from_thread.py): no exception, a pending
accept() ends with ChannelClosed, aclose() in the loop waits for the shutdown, and nothing
listens there any more.

Before: the http listener raised ``RuntimeError: no running event loop`` and went on
listening; the grpc listener took the call for a close after its loop's end, kept its server
without stopping it, and its port went on taking connections (found by helper-88)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from tests._loops import AioRun

from ipcwire import aio
from ipcwire.errors import ChannelClosed, ConnectionRefused


@pytest.mark.parametrize("url", ["http://127.0.0.1:0/api", "grpc://127.0.0.1:0"])
def test_a_listener_closed_from_another_thread(url: str, aio_run: AioRun) -> None:
    async def main() -> None:
        asyncio.get_running_loop().set_debug(True)  # (uvloop: checks nothing, runs as usual)
        lst = await aio.listen(url)
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
        with pytest.raises(ConnectionRefused):  # it listens no more
            await aio.connect(lst.url, timeout=5)

    aio_run(main())
