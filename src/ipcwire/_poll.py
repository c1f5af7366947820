"""Waiting for one file descriptor, with poll().

Not select(): it refuses fd numbers of 1024 and over (FD_SETSIZE), and a process with many
files or connections open hands those out, so a server's thousandth client would get
ValueError. Like select(), a hang-up or an error counts as ready.
"""

from __future__ import annotations

import select
from typing import Final, Protocol

__all__ = ["wait_readable", "wait_writable"]

_MAX_POLL_MS: Final = 2**31 - 1  # poll()'s longest wait (about 24 days)


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def _wait(fd: int | _HasFileno, events: int, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(fd, events)
    ms = None if timeout is None else min(max(0.0, timeout) * 1000, _MAX_POLL_MS)
    return bool(poller.poll(ms))


def wait_readable(fd: int | _HasFileno, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is readable (for a pidfd: the process exited), or ``timeout``
    seconds pass (None: no limit; a very long one may end early, after about 24 days).
    True if it is readable."""
    return _wait(fd, select.POLLIN, timeout)


def wait_writable(fd: int | _HasFileno, timeout: float | None = None) -> bool:
    """Wait until ``fd`` has room to write, or ``timeout`` passes; True if it has."""
    return _wait(fd, select.POLLOUT, timeout)
