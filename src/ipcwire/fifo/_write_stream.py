"""The blocking writer of a FIFO that several writers share: each write under a ``flock``
(the atomicity rule: :mod:`ipcwire.fifo._path`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import time

from ipcwire._core.wire import Packed
from ipcwire._deadline import not_seconds
from ipcwire.errors import Timeout
from ipcwire.fifo._notice import FlockTries
from ipcwire.pipe._fd import FdStream
from ipcwire.pipe._fdutil import PIPE_BUF

__all__ = ["FifoWriteStream", "lock_for", "writer_busy"]


def writer_busy(url: str, timeout: float | None) -> Timeout:
    """The error for a send that waited ``timeout`` for another writer's flock (held while
    it writes a message over PIPE_BUF bytes): nothing was sent, the channel goes on."""
    return Timeout(
        f"another writer held {url} for {timeout} s (a writer holds the FIFO while it writes "
        f"a message over PIPE_BUF bytes); nothing was sent: send again, or raise timeout=",
        endpoint=url,
    )


def lock_for(data: Packed) -> int:
    """The flock a write of ``data`` (one buffer, or a header and a payload) takes: exclusive
    over PIPE_BUF bytes (the kernel may split it), shared up to that (written whole)."""
    size = len(data[0]) + memoryview(data[1]).nbytes if type(data) is tuple else len(data)
    return fcntl.LOCK_EX if size > PIPE_BUF else fcntl.LOCK_SH


class FifoWriteStream(FdStream):
    """An :class:`FdStream` whose writes hold a ``flock`` on the FIFO, so several ipcwire
    writers never interleave (see :mod:`ipcwire.fifo._path`): exclusive for a message over
    PIPE_BUF, shared for a shorter one. The kernel splits a long write when the pipe is
    full, and a short message written without the lock could land in the gap: inside the
    long message, which would be delivered corrupted and the short one lost."""

    locks_writes = True  # the channel's C sender must take the flock too (flock=True)

    def __init__(self, *args: object, lock: bool = True, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self._lock_writes = lock
        self.locks_writes = lock

    def send_all(self, data: Packed, timeout: float | None) -> None:
        if not self._lock_writes or self.wfd is None:
            super().send_all(data, timeout)
            return
        how = lock_for(data)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
        except TypeError:  # timeout="1": checked where it is first added (no cost else)
            raise not_seconds(timeout, self.endpoint) from None
        # The write lock covers the flock too: threads share the open file, and so its flock
        # (one thread's unlock would release another's).
        with self._wlock:
            try:
                wfd = self.wfd
                if wfd is None:
                    self._send_all_locked(data, timeout)  # says closed
                    return
                self._flock(wfd, deadline, how, timeout)
                try:
                    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                    self._send_all_locked(data, left)
                finally:
                    with contextlib.suppress(OSError):
                        fcntl.flock(wfd, fcntl.LOCK_UN)
            finally:
                if self._orphan_write:
                    self._close_write()

    def _flock(self, fd: int, deadline: float | None, how: int, timeout: float | None) -> None:
        # (a long message posts its notice while it waits: see ipcwire.fifo._notice)
        tries = FlockTries(fd, how)
        try:
            while not tries.take():
                if deadline is not None and time.monotonic() >= deadline:
                    raise writer_busy(self.endpoint, timeout)
                if self.closed:
                    raise OSError(errno.EBADF, "closed")
                time.sleep(tries.failed())  # another writer is in the middle of a long message
        finally:
            tries.close()
