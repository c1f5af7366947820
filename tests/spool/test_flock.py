"""flock locks that name their holder, released by the kernel when the holder dies."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
from tests._proc import child, kill9, wait_line

from ipcwire.errors import ConfigurationError, Timeout
from ipcwire.spool import FileLock, lock_holders

HOLDER = """
import sys
from ipcwire.spool import FileLock
lock = FileLock({path!r}{shared}).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_busy_lock_names_its_holder_and_kill9_frees_it(tmp_path: Path) -> None:
    path = str(tmp_path / "db.lock")
    with child(HOLDER.format(path=path, shared="")) as proc:
        assert wait_line(proc) == "locked"
        assert lock_holders(path) == [proc.pid]
        lock = FileLock(path)
        with pytest.raises(Timeout) as err:
            lock.acquire(timeout=0)
        assert f"held by pid {proc.pid}" in str(err.value)  # its command line is shortened
        holder = lock.holder()
        assert holder is not None and holder.pid == proc.pid and holder.since is not None
        with pytest.raises(Timeout, match=r"still busy after 0\.05 s"):
            lock.acquire(timeout=0.05)
        box: list[float] = []

        def wait_for_it() -> None:
            lock.acquire(timeout=30)
            box.append(time.monotonic())

        t = threading.Thread(target=wait_for_it)
        t.start()
        killed = time.monotonic()
        kill9(proc)
        t.join(30)
        assert box and box[0] - killed < 5  # woken by the holder's close, not a long poll
        assert lock.locked
        lock.release()
        assert not lock.locked and lock.holder() is None


def test_shared_holders_exclude_an_exclusive_one(tmp_path: Path) -> None:
    path = str(tmp_path / "r.lock")
    with FileLock(path, shared=True), FileLock(path, shared=True), pytest.raises(Timeout):
        FileLock(path).acquire(timeout=0)
    with FileLock(path):
        pass


def test_asyncio_waits_without_blocking_the_loop(tmp_path: Path) -> None:
    path = str(tmp_path / "a.lock")
    with child(HOLDER.format(path=path, shared="")) as proc:
        assert wait_line(proc) == "locked"

        async def main() -> None:
            lock = FileLock(path)
            with pytest.raises(Timeout, match=f"pid {proc.pid}"):
                await lock.acquire_async(timeout=0.05)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            tick = asyncio.ensure_future(ticker())
            waiting = asyncio.ensure_future(lock.acquire_async(timeout=30))
            await asyncio.sleep(0)
            kill9(proc)
            async with await waiting:
                assert lock.locked
            tick.cancel()
            assert ticks > 1

        asyncio.run(main())


def test_not_reentrant_and_no_symlinks(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    lock = FileLock(path).acquire()
    with pytest.raises(ConfigurationError, match="not reentrant"):
        lock.acquire(timeout=0)
    lock.release()
    target = tmp_path / "precious"
    target.write_text("do not truncate")
    link = tmp_path / "planted.lock"
    os.symlink(target, link)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        FileLock(link).acquire(timeout=0)
    assert target.read_text() == "do not truncate"
