"""close() while a send is writing (another thread, or the asyncio driver's executor): the
send completes (or, if it had not started, raises ChannelClosed); nothing is left in tmp/,
and the store's descriptors are closed once it is done."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ipcwire
from ipcwire import aio
from ipcwire.spool.aio import AioSpoolChannel
from ipcwire.spool.blocking import SpoolChannel


@contextmanager
def _order_held(q: Path) -> Iterator[None]:
    """Hold the spool's .order lock, so a send stops just before renaming into new/."""
    fd = os.open(q / ".order", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _until_written(q: Path) -> None:
    """Until the send has its message in tmp/ (then it fsyncs and waits for .order)."""
    guard = time.monotonic() + 10
    while not os.listdir(q / "tmp"):
        assert time.monotonic() < guard, "the send never started"
        time.sleep(0.001)  # polls a condition


def _check(q: Path, ch: SpoolChannel | AioSpoolChannel) -> None:
    assert len(os.listdir(q / "new")) == 1 and os.listdir(q / "tmp") == []
    assert ch.store._new_fd == -1 and ch.store._order_fd == -1  # closed after the send


def test_blocking_close_while_another_thread_sends(spool_dir: Path) -> None:
    q = spool_dir / "q"
    ch = ipcwire.connect(f"spool://{q}")
    assert isinstance(ch, SpoolChannel)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            ch.send(b"m" * 1000)
        except BaseException as exc:
            errors.append(exc)

    with _order_held(q):
        t = threading.Thread(target=send)
        t.start()
        _until_written(q)
        ch.close()
    t.join(10)
    assert errors == []
    _check(q, ch)


def test_asyncio_close_while_the_executor_sends(spool_dir: Path) -> None:
    q = spool_dir / "q"

    async def main() -> None:
        ch = await aio.connect(f"spool://{q}")
        assert isinstance(ch, AioSpoolChannel)
        with _order_held(q):
            sending = asyncio.create_task(ch.send(b"m" * 1000))
            await asyncio.sleep(0)  # into the executor
            await asyncio.get_running_loop().run_in_executor(None, _until_written, q)
            await ch.aclose()
        async with asyncio.timeout(10):
            await sending
        _check(q, ch)

    asyncio.run(main())
