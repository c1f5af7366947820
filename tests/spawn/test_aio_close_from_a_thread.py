"""An asyncio spawn channel closed from another thread while a task waits in ``recv``: the
``recv`` raises ``ChannelClosed`` at once and the loop runs the shutdown ladder, on asyncio's
loop and uvloop alike. Before, the close ran in the calling thread: ``recv`` saw
``ChannelClosed`` only at its timeout (asyncio) or raised ``Timeout`` (uvloop), and the
ladder's task was created from outside the loop (asyncio's debug mode: RuntimeError
"Non-thread-safe operation")."""

from __future__ import annotations

import asyncio
import threading
import time

from tests._aio_listeners import until
from tests._loops import AioRun
from tests.pipe.test_aio_close_from_a_thread import close_once_the_loop_sleeps
from tests.spawn._util import alive, py

from ipcwire import aio
from ipcwire.errors import ChannelClosed

WAIT = 10.0

CHILD = """
import sys
for line in sys.stdin:
    pass
"""


def test_close_from_another_thread_wakes_recv_and_stops_the_child(aio_run: AioRun) -> None:
    async def main() -> tuple[BaseException | None, float, int, int | None]:
        ch = await aio.spawn(py(CHILD), exit_timeout=5, term_timeout=1)
        try:
            task = asyncio.create_task(ch.recv(timeout=WAIT))
            assert await until(lambda: ch._waiter is not None, 5)  # recv is waiting
            began = time.monotonic()
            closer = close_once_the_loop_sleeps(ch, threading.get_native_id())
            await asyncio.wait({task}, timeout=WAIT + 5)
            took = time.monotonic() - began
            closer.join(5)
            assert task.done()
            # the ladder runs in the loop: stdin closed, the child exits by itself
            assert await until(lambda: ch._shutdown is not None, 5)
            assert ch._shutdown is not None
            await asyncio.wait_for(asyncio.shield(ch._shutdown), 10)
            return task.exception(), took, ch.pid, ch.returncode
        finally:
            await ch.aclose()

    exc, took, pid, status = aio_run(main())
    assert isinstance(exc, ChannelClosed), exc
    assert took < WAIT / 2, took
    assert status == 0
    assert not alive(pid)
