"""close() of an asyncio HTTP listener from another thread, while its event loop runs in its
own: it raised ``RuntimeError: no running event loop`` and went on listening (found by
helper-88 after the same fix for SSE, d4e8475). Now it hands its close to the loop, as the
SSE listener does: no exception, a pending ``accept()`` ends with ``ChannelClosed``, and
``aclose()`` in the loop waits for the shutdown."""

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
        lst = await aio.listen("http://127.0.0.1:0/api")
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
        assert errors == []  # was RuntimeError: no running event loop
        await lst.aclose()
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(ConnectionRefused):  # it listens no more
            await aio.connect(lst.url, timeout=10)

    aio_run(main())
