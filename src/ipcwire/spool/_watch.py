"""Wake-ups when something changes in the file system: inotify where it works, polling where not.

inotify (through ``inotify_simple``) is used on Linux when the package is installed and the
per-user limits allow another instance and watch (``fs.inotify.max_user_instances`` and
``max_user_watches``); otherwise, and on other systems, waits fall back to polling every
``poll_interval`` seconds and ``mode`` says so (``ipcwire.spool`` channels report it in their
``statistics``-adjacent ``wakeups`` attribute). Events only *wake* a waiter; the caller always
re-reads the directory, so a lost or coalesced event costs at most one poll interval.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import time
from collections.abc import Iterable
from typing import Any, Final

from ipcwire._poll import poll_ms

__all__ = ["IN_CLOSE", "IN_MOVED_TO", "Watcher", "wait_readable"]

log = logging.getLogger("ipcwire")

IN_CLOSE: Final = 0x00000008 | 0x00000010  # IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100


def wait_readable(fds: Iterable[int], timeout: float | None) -> set[int]:
    """Wait until any of ``fds`` is readable (or ``timeout`` seconds pass); the ready ones."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(poll_ms(timeout))}


def _cannot_watch(path: str, exc: OSError) -> str:
    """Why ``path`` could not be watched: only ENOSPC is the per-user limit of watches."""
    if exc.errno == errno.ENOSPC:
        return (
            f"cannot watch {path}: this user's inotify watches are used up "
            f"(fs.inotify.max_user_watches)"
        )
    return f"cannot watch {path} ({exc.strerror or exc})"


class Watcher:
    """Watches paths for the given inotify events; falls back to polling.

    ``fileno()`` is the inotify descriptor (readable when something happened), or None when
    polling. Call :meth:`drain` after it was readable.
    """

    def __init__(
        self,
        watches: Iterable[tuple[str, int]],
        *,
        poll_interval: float = 0.05,
        polling: bool = False,
    ):
        self.poll_interval = poll_interval
        self.mode = "polling"
        self.reason = ""
        self._inotify: Any = None
        if polling:
            self.reason = "asked for (watch='polling')"
            return
        try:
            import inotify_simple
        except ImportError:
            self.reason = "inotify_simple is not installed (pip install 'ipcwire[system]')"
            return
        try:
            ino = inotify_simple.INotify(nonblocking=True)
        except OSError as exc:
            self.reason = f"no inotify instance ({exc}; see fs.inotify.max_user_instances)"
            log.info("polling instead of inotify: %s", self.reason)
            return
        for path, mask in watches:
            try:
                ino.add_watch(path, mask)
            except OSError as exc:
                ino.close()
                self.reason = _cannot_watch(path, exc)
                log.info("polling instead of inotify: %s", self.reason)
                return
        self._inotify = ino
        self.mode = "inotify"

    def fileno(self) -> int | None:
        """The inotify descriptor, or None when polling."""
        return None if self._inotify is None else int(self._inotify.fileno())

    def drain(self) -> None:
        """Consume pending events (their content does not matter: callers re-read)."""
        ino = self._inotify
        if ino is None:
            return
        try:
            while os.read(ino.fileno(), 65536):
                pass
        except BlockingIOError:
            pass
        except OSError:
            pass

    def wait(self, timeout: float | None, wake_fd: int | None = None) -> bool:
        """Wait for an event, ``wake_fd``, or the timeout (capped to the poll interval when
        polling). Returns True when ``wake_fd`` became readable."""
        fds = [fd for fd in (self.fileno(), wake_fd) if fd is not None]
        if self._inotify is None:
            timeout = self.poll_interval if timeout is None else min(timeout, self.poll_interval)
        if not fds:
            time.sleep(timeout or 0)
            return False
        ready = wait_readable(fds, timeout)
        if self._inotify is not None and self._inotify.fileno() in ready:
            self.drain()
        return wake_fd is not None and wake_fd in ready

    def close(self) -> None:
        """Stop watching."""
        ino, self._inotify = self._inotify, None
        if ino is not None:
            ino.close()
