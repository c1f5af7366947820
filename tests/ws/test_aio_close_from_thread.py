"""asyncio: ``close()`` from another thread than the loop's wakes a waiting ``recv()`` (or
``accept()``) at once with ``ChannelClosed``, and the peer sees the clean end. Before, the
close made its task from the wrong thread: the loop, asleep in its selector, ran it only when
something else woke it, so ``recv(timeout=10)`` raised ``Timeout`` after 10 s (uvloop: the
listener's ``accept()`` too), and the peer saw the end only then."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests._loops import AioRun

from ipcwire import aio
from ipcwire.errors import ChannelClosed, EndOfChannel

WAIT = 10.0  # each wait's own limit: the close must end it long before


def _closer(loop: asyncio.AbstractEventLoop, close: Callable[[], None]) -> threading.Thread:
    """A thread that calls ``close`` once the loop is waiting (it answered a call from the
    thread: the wait in the test has begun, and the loop went back to its selector)."""

    def run() -> None:
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(WAIT)
        close()

    return threading.Thread(target=run)


def _urls(tmp: Path) -> list[str]:
    return ["ws://127.0.0.1:0/app", f"ws+unix://{tmp / 'w.sock'}"]


@pytest.mark.parametrize("kind", ["ws", "ws+unix"])
def test_close_from_another_thread_wakes_recv_and_accept(
    kind: str, aio_run: AioRun, tmp_path: Path
) -> None:
    url = _urls(tmp_path)[0 if kind == "ws" else 1]

    async def main() -> None:
        async with await aio.listen(url) as listener:
            ch = await aio.connect(listener.url, timeout=5, ping_interval=None)
            server = await listener.accept(timeout=5)
            loop = asyncio.get_running_loop()
            began = time.monotonic()
            waiting = asyncio.ensure_future(ch.recv(timeout=WAIT))
            await asyncio.sleep(0)  # (recv waits)
            closer = _closer(loop, ch.close)
            closer.start()
            with pytest.raises(ChannelClosed):
                await waiting
            assert time.monotonic() - began < WAIT / 2
            with pytest.raises(EndOfChannel):  # the peer got the closing handshake
                await server.recv(timeout=WAIT / 2)
            closer.join()
            await server.aclose()

            began = time.monotonic()
            accepting = asyncio.ensure_future(listener.accept(timeout=WAIT))
            await asyncio.sleep(0)  # (accept waits)
            closer = _closer(loop, listener.close)
            closer.start()
            with pytest.raises(ChannelClosed):
                await accepting
            assert time.monotonic() - began < WAIT / 2
            closer.join()
        if kind == "ws+unix":
            assert not (tmp_path / "w.sock").exists()

    aio_run(main())
