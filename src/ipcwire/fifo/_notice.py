"""A long writer's notice that it waits for a FIFO: what lets the asyncio writers keep their
shared ``flock`` across a turn of the event loop without starving it.

Writers of a message over PIPE_BUF bytes need the FIFO's flock exclusively (see
:mod:`ipcwire.fifo._path`), and take it by polling with ``LOCK_NB`` (a blocking flock would
block the loop, and Linux favours no waiter anyway: a shared lock is granted whenever no
exclusive one is *held*). An asyncio channel opened with ``hold_lock=True`` that sends a
burst of short messages keeps its shared lock until its task yields
(:class:`ipcwire.fifo.aio.AioFifoChannel`); a poll would rarely find the FIFO free then.
So while a long writer waits, it holds this notice: an open-file-description record lock
(``F_OFD_SETLK``, Linux 3.15) on the FIFO's first byte, which the kernel keeps apart from
flock locks and drops when the writer's file is closed (also when the process dies). A
holding channel looks for it every so many messages (``F_OFD_GETLK``: one system call) and,
while it is there, locks per message again, so the long writer's next poll finds the FIFO
free between two of them.

Where OFD locks are missing (not Linux), nobody posts and nobody holds across turns.
"""

from __future__ import annotations

import fcntl
import struct
import sys
from typing import Final

__all__ = ["AVAILABLE", "FlockTries", "LongWait", "posted"]

_F_SETLK: Final[int] = getattr(fcntl, "F_OFD_SETLK", -1)
_F_GETLK: Final[int] = getattr(fcntl, "F_OFD_GETLK", -1)
# struct flock of 64-bit Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid
# (pid_t, 0 as OFD locks require), padding
_FLOCK: Final = struct.Struct("hhqqi4x")
AVAILABLE: Final = sys.platform.startswith("linux") and _F_SETLK > 0 and struct.calcsize("P") == 8

_POST: Final = _FLOCK.pack(fcntl.F_WRLCK, 0, 0, 1, 0)
_WITHDRAW: Final = _FLOCK.pack(fcntl.F_UNLCK, 0, 0, 1, 0)
_UNLOCKED: Final = fcntl.F_UNLCK
# A long writer's pauses between two tries for the flock: doubling from 0.5 ms up to 10 ms,
# or up to 1 ms while its notice is up (holding channels lock per message for it then, so
# it should not keep them waiting long).
_MAX_PAUSE: Final = 0.01
_MAX_PAUSE_POSTED: Final = 0.001


def posted(fd: int) -> bool | None:
    """Whether another open file of this FIFO (``fd``, a write end) holds the notice: a long
    writer waits for the flock. None when this cannot be told (no OFD locks here, or not on
    this file system): then nobody may hold the flock across turns."""
    try:
        got = fcntl.fcntl(fd, _F_GETLK, _POST)
    except OSError:
        return None
    return bool(_FLOCK.unpack(got)[0] != _UNLOCKED)


class LongWait:
    """The notice of one wait for the exclusive flock on ``fd`` (a write end): posted while
    the wait goes on (:meth:`post` after a try failed), withdrawn when it ends (taken, or
    given up: :meth:`withdraw`, which a ``finally`` calls). Another long writer's notice
    stands for this one too: it is posted again at a later try, once that one is gone."""

    __slots__ = ("fd", "up")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.up = False

    def post(self) -> None:
        """Post the notice, unless it is up already (or another writer's stands)."""
        if self.up or not AVAILABLE:
            return
        try:
            fcntl.fcntl(self.fd, _F_SETLK, _POST)
        except OSError:  # another long writer's notice (EAGAIN), or none to be had
            return
        self.up = True

    def withdraw(self) -> None:
        """Withdraw the notice, if this wait posted it."""
        if self.up:
            self.up = False
            try:
                fcntl.fcntl(self.fd, _F_SETLK, _WITHDRAW)
            except OSError:
                pass


class FlockTries:
    """A writer's tries for the FIFO's flock ``how`` on ``fd``, without blocking: what the
    blocking and the asyncio writers share (each sleeps its own way between two tries, and
    says its own error at its deadline). A long message's exclusive lock posts its notice
    while it waits; :meth:`close` (in a ``finally``) withdraws it.

    ``while not tries.take(): ...; sleep(tries.failed())``."""

    __slots__ = ("_how", "_pause", "_wait", "fd")

    def __init__(self, fd: int, how: int) -> None:
        self.fd = fd
        self._how = how | fcntl.LOCK_NB
        self._pause = 0.0005
        self._wait = LongWait(fd) if how == fcntl.LOCK_EX else None

    def take(self) -> bool:
        """Try for the lock once: True when this writer has it now.

        Raises:
            OSError: not a lock conflict (the fd closed, say).
        """
        try:
            fcntl.flock(self.fd, self._how)
        except BlockingIOError:
            return False
        return True

    def failed(self) -> float:
        """After a try that failed: post the notice (a long message's), and the seconds to
        pause before the next try (doubling from 0.5 ms, up to 10 ms, or 1 ms while the
        notice is up: holding channels lock per message for it then)."""
        wait = self._wait
        if wait is not None:
            wait.post()
        pause = self._pause
        self._pause = min(
            pause * 2, _MAX_PAUSE_POSTED if wait is not None and wait.up else _MAX_PAUSE
        )
        return pause

    def close(self) -> None:
        if self._wait is not None:
            self._wait.withdraw()
