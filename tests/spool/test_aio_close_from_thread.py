"""close() of an asyncio spool channel from another thread wakes its waiting recv at once.

Before, close() set the channel's asyncio.Event from that thread, which does not wake the
event loop: the recv saw ChannelClosed only when its wait ended by itself (its timeout, or
the next reap, ``reap_interval`` later). close() now hands the closing to the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from ipcwire import aio
from ipcwire.errors import ChannelClosed


def test_close_from_another_thread_wakes_a_waiting_recv(spool_dir: Path) -> None:
    async def main() -> float:
        ch = await aio.connect(f"spool://{spool_dir}/q?reap_interval=60")
        waiting = asyncio.create_task(ch.recv(timeout=30))
        deadline = time.monotonic() + 5
        while ch._reading_fd is None and ch._watcher.fileno() is not None:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)  # (polling, no descriptor: the recv is in its wait by now)
        closer = threading.Thread(target=ch.close)
        start = time.monotonic()
        closer.start()
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(waiting, 10)
        closer.join(5)
        return time.monotonic() - start

    assert asyncio.run(main()) < 2
