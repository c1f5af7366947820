"""File primitives of the spool, on both sides and without state: the flags a message file
is opened with, its attempt count from its name, an flock taken without waiting, reading a
file whole, and a flush of a whole file system.

Separate from :mod:`ipcwire.spool._store` (the directory and its producers) and
:mod:`ipcwire.spool._consume` (claiming, putting back, reaping) because both use them.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import sys
from typing import Any, Final

__all__ = ["_CLAIM", "_READ", "Buffer", "_locked", "_read_all", "_split", "_syncfs"]

_READ: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
# Opening what is in new/: O_NONBLOCK so that a FIFO put there by someone else does not block
# the open (for a regular file it changes nothing).
_CLAIM: Final = _READ | os.O_NONBLOCK
Buffer = bytes | bytearray | memoryview


def _split(name: str) -> tuple[str, int]:
    """``(base, attempt)`` of a message file name."""
    base, _, attempt = name.rpartition(".")
    try:
        return base, int(attempt)
    except ValueError:
        return name, 0


def _locked(fd: int, *, shared: bool = False) -> bool:
    """Take an exclusive (or ``shared``) flock without waiting; False when someone else
    holds it in a way that excludes it."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


_libc: Any = None


def _syncfs(fd: int) -> bool:
    """Flush the whole file system holding ``fd`` (Linux ``syncfs``); False if unavailable."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.syncfs.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


def _read_all(fd: int, size: int) -> bytes:
    data = os.pread(fd, size, 0)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
