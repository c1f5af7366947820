"""Waiting for one file descriptor, with poll().

Not select(): it refuses fd numbers of 1024 and over (FD_SETSIZE), and a process with many
files or connections open hands those out, so a server's thousandth client would get
ValueError. Like select(), a hang-up or an error counts as ready.
"""

from __future__ import annotations

import math
import select
from typing import Final, Protocol

from ipcwire._deadline import NO_LIMIT, not_a_number

__all__ = ["poll_ms", "wait_readable", "wait_writable"]

_MAX_POLL_MS: Final = 2**31 - 1  # poll()'s longest wait (about 24 days)


def poll_ms(seconds: float | None) -> int | None:
    """``poll()``'s timeout for a wait of ``seconds``: None (no limit) for None or anything
    over :data:`ipcwire._deadline.NO_LIMIT`; rounded up, so a wait never ends before its
    time (0 for none left); at most poll()'s longest, about 24 days, after which a caller
    with a deadline waits again."""
    if seconds is None or seconds > NO_LIMIT:
        return None
    if not seconds > 0:
        if math.isnan(seconds):
            raise not_a_number()
        return 0
    return min(math.ceil(seconds * 1000), _MAX_POLL_MS)


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def _wait(fd: int | _HasFileno, events: int, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(poll_ms(timeout)))


def wait_readable(fd: int | _HasFileno, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is readable (for a pidfd: the process exited), or ``timeout``
    seconds pass (None: no limit; a very long one may end early, after about 24 days).
    True if it is readable."""
    return _wait(fd, select.POLLIN, timeout)


def wait_writable(fd: int | _HasFileno, timeout: float | None = None) -> bool:
    """Wait until ``fd`` has room to write, or ``timeout`` passes; True if it has."""
    return _wait(fd, select.POLLOUT, timeout)
