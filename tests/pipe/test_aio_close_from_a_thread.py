"""An asyncio pipe channel closed from another thread (a watchdog, a signal-handling thread,
a blocking API's worker) while a task waits in ``recv``: the waiting ``recv`` raises
``ChannelClosed`` at once, on asyncio's loop and uvloop alike.

Before, the close ran in the calling thread: the future ``recv`` waits on was set from there,
which does not wake the loop, so ``recv`` saw ``ChannelClosed`` only at its timeout
(asyncio), or raised ``Timeout`` (uvloop); the transport's readers were removed from outside
the loop too. The close is now handed to the channel's loop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests._aio_listeners import until
from tests._loops import AioRun

from ipcwire import pipe
from ipcwire.errors import ChannelClosed, EndOfChannel

WAIT = 10.0  # the recv's own timeout: a close that does not wake it is seen only then


def close_once_the_loop_sleeps(ch: Any, loop_tid: int) -> threading.Thread:
    """A thread that closes ``ch`` once the loop's thread (``loop_tid``, a native id) is
    asleep in epoll: a close made before that is seen by the loop's next turn anyway, and
    would not show whether the close wakes it (a bounded poll of /proc, 5 s at most)."""

    def run() -> None:
        wchan = Path(f"/proc/self/task/{loop_tid}/wchan")
        deadline = time.monotonic() + 5
        while "epoll" not in wchan.read_text() and time.monotonic() < deadline:
            time.sleep(0.001)
        ch.close()

    closer = threading.Thread(target=run)
    closer.start()
    return closer


def test_close_from_another_thread_wakes_a_waiting_recv(aio_run: AioRun) -> None:
    async def main() -> tuple[BaseException | None, float]:
        a, b = pipe.ends()
        ch = await a.aopen(codec="json")
        try:
            task = asyncio.create_task(ch.recv(timeout=WAIT))
            assert await until(lambda: ch._waiter is not None, 5)  # recv is waiting
            began = time.monotonic()
            closer = close_once_the_loop_sleeps(ch, threading.get_native_id())
            await asyncio.wait({task}, timeout=WAIT + 5)
            took = time.monotonic() - began
            closer.join(5)
            assert task.done()
            return task.exception(), took
        finally:
            await ch.aclose()
            b.close()

    exc, took = aio_run(main())
    assert isinstance(exc, ChannelClosed), exc
    assert took < WAIT / 2, took


def test_a_close_from_another_thread_ends_the_peers_stream(aio_run: AioRun) -> None:
    async def main() -> None:
        a, b = pipe.ends()
        ch = await a.aopen(codec="json")
        peer = await b.aopen(codec="json")
        try:
            closer = threading.Thread(target=ch.close)
            closer.start()
            closer.join(5)
            # the loop closes it (the fds with it): the peer reads the end of the stream
            with pytest.raises(EndOfChannel):
                await peer.recv(timeout=5)
            assert await until(lambda: ch._fdt is not None and ch._fdt._wfd is None, 5)
        finally:
            await ch.aclose()
            await peer.aclose()

    aio_run(main())
