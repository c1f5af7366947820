"""An asyncio signal waiter (or ``signal:`` listener) closed from another thread.

Before, ``close()`` removed the loop's signal handler from that thread: asyncio and uvloop
forgot the handler, but ``signal.signal()`` refused to run outside the main thread, so their
no-op handler stayed for good and swallowed the signal (a SIGTERM no longer ended the
process, even after the loop had closed); and the task in ``recv()`` was not woken (its
future was resolved from the wrong thread): it waited for its timeout, or for ever. Now the
close is handed to the loop, as the other asyncio drivers do.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType

import pytest
from tests._loops import AioRun

from ipcwire import aio
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.errors import ChannelClosed
from ipcwire.signals.aio import AioSignalWaiter


def _mine(signum: int, frame: FrameType | None) -> None:
    pass


async def _handler_back(bound: float = 10.0) -> bool:
    """Whether SIGUSR1's handler is ours (_mine) again within ``bound`` seconds (polled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while signal.getsignal(signal.SIGUSR1) is not _mine:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _close_from_a_thread(close: object) -> threading.Thread:
    t = threading.Thread(target=close)  # type: ignore[arg-type]
    t.start()
    return t


async def _open(kind: str) -> tuple[AioChannel, AioChannel | AioListener]:
    """A waiter for SIGUSR1, and what is to be closed: the waiter, or its listener."""
    if kind == "waiter":
        waiter = AioSignalWaiter(["USR1"])
        return waiter, waiter
    listener = await aio.listen("signal:USR1")
    return await listener.accept(timeout=5), listener


@pytest.mark.parametrize("kind", ["waiter", "listener"])
def test_close_from_another_thread_wakes_recv_and_restores_the_handler(
    kind: str, aio_run: AioRun
) -> None:
    async def main() -> None:
        with pytest.warns(RuntimeWarning, match="ipcwire now handles SIGUSR1"):  # (_mine)
            waiter, closable = await _open(kind)
        close = closable.close
        assert signal.getsignal(signal.SIGUSR1) is not _mine
        receiving = asyncio.ensure_future(waiter.recv())
        await asyncio.sleep(0)  # (it waits now)
        t = _close_from_a_thread(close)
        await asyncio.to_thread(t.join, 10)
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(receiving, 10)  # before: asyncio's TimeoutError
        assert await _handler_back()  # before: the loop's no-op handler stayed
        if isinstance(closable, AioListener):
            with pytest.raises(ChannelClosed):
                await closable.accept(timeout=5)

    previous = signal.signal(signal.SIGUSR1, _mine)
    try:
        aio_run(main())
        assert signal.getsignal(signal.SIGUSR1) is _mine
    finally:
        signal.signal(signal.SIGUSR1, previous)
