"""A producer stopped (SIGSTOP, a debugger, a frozen cgroup) while it holds the spool's
.order lock, as it does while renaming a batch into new/: consumers still honour timeout=,
close() still returns, and they go on once it lets go."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from pathlib import Path

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelClosed, Timeout
from ipcwire.spool.blocking import SpoolChannel


def test_blocking_consumer_with_order_held(spool_dir: Path) -> None:
    q = spool_dir / "q"
    with ipcwire.connect(f"spool://{q}") as p:
        p.send(b"before")
    c = ipcwire.connect(f"spool://{q}")
    assert isinstance(c, SpoolChannel)
    order = os.open(q / ".order", os.O_RDONLY)
    fcntl.flock(order, fcntl.LOCK_SH)  # what a producer holds while renaming
    results: list[object] = []

    def consume() -> None:
        for _ in range(2):
            try:
                results.append(c.recv(timeout=0.3))
            except (Timeout, ChannelClosed) as exc:
                results.append(type(exc))

    t = threading.Thread(target=consume, daemon=True)
    try:
        t.start()
        t.join(10)
        hung = t.is_alive()
    finally:
        fcntl.flock(order, fcntl.LOCK_UN)  # lets a hung consumer go
        os.close(order)
        t.join(10)
    assert not hung, "recv(timeout=0.3) did not return while .order was held"
    assert results == [Timeout, Timeout]
    assert c.recv(timeout=5) == b"before"  # and once it is free, on it goes
    c.close()


def test_blocking_close_with_order_held(spool_dir: Path) -> None:
    q = spool_dir / "q"
    c = ipcwire.connect(f"spool://{q}")
    order = os.open(q / ".order", os.O_RDONLY)
    fcntl.flock(order, fcntl.LOCK_SH)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            c.recv()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=consume, daemon=True)
    closer = threading.Thread(target=c.close, daemon=True)
    try:
        t.start()
        closer.start()
        closer.join(10)
        hung = closer.is_alive()
    finally:
        fcntl.flock(order, fcntl.LOCK_UN)
        os.close(order)
        closer.join(10)
        t.join(10)
    assert not hung, "close() did not return while .order was held"
    assert [type(e) for e in errors] == [ChannelClosed]


def test_asyncio_consumer_with_order_held(spool_dir: Path) -> None:
    q = spool_dir / "q"
    with ipcwire.connect(f"spool://{q}") as p:
        p.send(b"before")
    results: list[object] = []

    async def main() -> None:
        async with await aio.connect(f"spool://{q}") as c:
            try:
                results.append(await c.recv(timeout=0.3))
            except Timeout as exc:
                results.append(type(exc))
            held.set()
            await asyncio.to_thread(released.wait)
            results.append(await c.recv(timeout=5))

    held, released = threading.Event(), threading.Event()
    order = os.open(q / ".order", os.O_RDONLY)
    fcntl.flock(order, fcntl.LOCK_SH)
    # in a thread: a claim stuck in flock would block the event loop itself
    t = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    try:
        t.start()
        hung = not held.wait(10)
    finally:
        fcntl.flock(order, fcntl.LOCK_UN)
        os.close(order)
        released.set()
        t.join(10)
    assert not hung, "recv(timeout=0.3) did not return while .order was held"
    assert results == [Timeout, b"before"]
