"""A lock whose holder removes the file before letting go (as an mq listener does when it
closes) is not held by a waiter that had opened the removed file: the classic flock-and-unlink
race, lined up with a pause between the waiter's open and its flock."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests._pause import PauseAt

from ipcwire.errors import Timeout
from ipcwire.spool import FileLock

WAYS: dict[str, Callable[[FileLock], Any]] = {
    "try once": lambda lock: lock.acquire(timeout=0),
    "waiting": lambda lock: lock.acquire(timeout=0.3),
    "asyncio": lambda lock: asyncio.run(lock.acquire_async(timeout=0.3)),
}


def _same_file(lock: FileLock) -> bool:
    assert lock._fd is not None
    try:
        there = os.stat(lock.path)
    except FileNotFoundError:
        return False
    mine = os.fstat(lock._fd)
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _opened_then_holder_leaves(path: str, way: str) -> tuple[FileLock, PauseAt]:
    """A holds the lock; B opens the file and stops before its flock; A removes the file
    and lets go. Returns B and its pause."""
    a = FileLock(path).acquire()
    b = FileLock(path)
    gate = PauseAt(FileLock._try, "fcntl.flock(fd, op)")
    gate.start(WAYS[way], b)
    gate.wait_reached()  # B has the file A holds open
    os.unlink(path)  # A closes: remove, then release
    a.release()
    return b, gate


@pytest.mark.parametrize("way", WAYS)
def test_no_two_holders_when_the_file_was_removed_and_made_again(tmp_path: Path, way: str) -> None:
    path = str(tmp_path / "q.lock")
    b, gate = _opened_then_holder_leaves(path, way)
    c = FileLock(path).acquire(timeout=0)  # a newcomer makes the file anew and locks it
    gate.go()
    try:
        with pytest.raises(Timeout, match=f"held by pid {os.getpid()}"):
            gate.join()  # before the fix: B held the removed file's lock, C the new one's
    finally:
        b.release()
    assert not b.locked and c.created
    with pytest.raises(Timeout):
        FileLock(path).acquire(timeout=0)  # C still holds it, alone
    c.release()
    with FileLock(path).acquire(timeout=0) as d:
        assert not d.created and _same_file(d)


@pytest.mark.parametrize("way", WAYS)
def test_the_waiter_locks_a_new_file_when_nobody_made_one(tmp_path: Path, way: str) -> None:
    path = str(tmp_path / "q.lock")
    b, gate = _opened_then_holder_leaves(path, way)
    assert gate.join() is b
    try:
        assert b.locked and _same_file(b)  # before the fix: the removed file's lock
        assert b.created
        with pytest.raises(Timeout):
            FileLock(path).acquire(timeout=0)  # B holds the file at the path
    finally:
        b.release()
