"""A process holding the spool's .order lock exclusively (a consumer stopped while it lists
new/, SIGSTOP, a debugger, or any program that can open the spool): producers honour
timeout=, queue nothing, leave nothing in tmp/, give way to close(), and never block an
event loop; once the lock is free they go on."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelClosed, Timeout


@contextmanager
def order_held(q: Path) -> Iterator[None]:
    """Hold q/.order exclusively, as a consumer does while it lists new/."""
    order = os.open(q / ".order", os.O_RDONLY)
    fcntl.flock(order, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(order)  # lets a hung producer go


def test_blocking_send_with_order_held(spool_dir: Path) -> None:
    q = spool_dir / "q"
    p = ipcwire.connect(f"spool://{q}", fsync=False)
    results: list[object] = []

    def produce() -> None:
        try:
            p.send(b"x", timeout=0.2)
            results.append("sent")
        except Timeout as exc:
            results.append(exc)

    t = threading.Thread(target=produce, daemon=True)
    with order_held(q):
        t.start()
        t.join(10)
        hung = t.is_alive()
    t.join(10)
    assert not hung, "send(timeout=0.2) did not return while .order was held"
    [exc] = results
    assert isinstance(exc, Timeout)
    assert ".order" in str(exc) and f"pid {os.getpid()}" in str(exc)
    assert "nothing of this send was queued" in str(exc)
    assert os.listdir(q / "new") == [] and os.listdir(q / "tmp") == []
    p.send(b"y", timeout=5)  # and once it is free, on it goes
    with ipcwire.connect(f"spool://{q}") as c:
        assert c.recv(timeout=5) == b"y"
    p.close()


def test_blocking_close_ends_a_send_waiting_for_order(spool_dir: Path) -> None:
    q = spool_dir / "q"
    p = ipcwire.connect(f"spool://{q}", fsync=False)
    errors: list[BaseException] = []
    started = threading.Event()

    def produce() -> None:
        started.set()
        try:
            p.send(b"x")  # no timeout: waits for .order until close()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=produce, daemon=True)
    with order_held(q):
        t.start()
        started.wait(10)
        # it waits for .order once its file is in tmp/
        deadline = time.monotonic() + 10
        while not os.listdir(q / "tmp") and time.monotonic() < deadline:
            time.sleep(0.001)  # bounded poll: nothing to wait on for a file to appear
        p.close()
        t.join(10)
        hung = t.is_alive()
    t.join(10)
    assert not hung, "a send waiting for .order went on after close()"
    assert [type(e) for e in errors] == [ChannelClosed]
    assert os.listdir(q / "new") == [] and os.listdir(q / "tmp") == []


@pytest.mark.parametrize("fsync", [False, True])
def test_asyncio_send_with_order_held(spool_dir: Path, fsync: bool) -> None:
    q = spool_dir / "q"
    ipcwire.connect(f"spool://{q}").close()  # the spool and its .order
    results: list[object] = []
    ticks = 0

    async def main() -> None:
        nonlocal ticks
        async with await aio.connect(f"spool://{q}", fsync=fsync) as p:

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            try:
                await p.send(b"x", timeout=0.2)
                results.append("sent")
            except Timeout as exc:
                results.append(exc)
            ticker.cancel()
            held.set()
            await asyncio.to_thread(released.wait)
            await p.send(b"y", timeout=5)

    held, released = threading.Event(), threading.Event()
    # in a thread: a send stuck in flock on the loop would block the test's own loop
    t = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    with order_held(q):
        t.start()
        hung = not held.wait(10)
    released.set()
    t.join(10)
    assert not hung, "send(timeout=0.2) did not return while .order was held"
    [exc] = results
    assert isinstance(exc, Timeout) and "nothing of this send was queued" in str(exc)
    assert ticks > 10, "the event loop stood still while the send waited"
    assert not t.is_alive()
    assert os.listdir(q / "tmp") == []
    with ipcwire.connect(f"spool://{q}") as c:
        assert c.recv(timeout=5) == b"y"
