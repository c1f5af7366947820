"""Names in the file system (and the kernel) that must not outlive the program that made them.

A listener's socket file, FIFO or message queue goes when the listener closes. A program that
never closes it (it forgot, it let the object be garbage collected, or it ends by returning
from ``main``) still leaves nothing: each such cleanup is registered here when the name is
made, and what has not run by interpreter exit runs then. A process killed with -9 runs
nothing; the next ``listen()`` of the same name probes and replaces what it left.

Each cleanup checks for itself that it runs in the process that made the name (a forked
child's exit leaves its parent's names alone) and that the name is still the one it made.

The same goes for what a channel still holds in the process: the blocking HTTP client's
sender thread posts what ``send()`` queued, and a program that ended without ``close()`` lost
the rest with it (the server never learned that the session ended); a blocking WebSocket
client's end looked like a crash to its server (no closing handshake). Those channels are
closed here too, through a weak reference. (The blocking gRPC client has a hook of its own,
which must run before grpc's: ipcwire.grpc._sync.)
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["AtExit", "closes_at_exit"]

log = logging.getLogger("ipcwire")

_pending: dict[int, AtExit] = {}
_lock = threading.Lock()


class AtExit:
    """``cleanup``, to run once: by :meth:`run` (a close), or at interpreter exit if nothing
    ran or cancelled it before."""

    __slots__ = ("__weakref__", "_cleanup")

    def __init__(self, cleanup: Callable[[], object]) -> None:
        self._cleanup = cleanup
        with _lock:
            _pending[id(self)] = self

    def _take(self) -> bool:
        with _lock:
            return _pending.pop(id(self), None) is not None

    def run(self) -> None:
        """Run the cleanup now, unless it ran (or was cancelled) already."""
        if self._take():
            self._cleanup()

    def cancel(self) -> None:
        """Never run it (the owner cleaned up in its own way)."""
        self._take()


def closes_at_exit(channel: Any) -> AtExit:
    """An :class:`AtExit` that closes ``channel`` (held weakly: a channel the program drops is
    still collected) at interpreter exit, in the process that opened it (its ``_owner``: a
    forked child's copy is its parent's connection). The channel's ``close()`` cancels it."""
    ref = weakref.ref(channel)

    def close() -> None:
        ch = ref()
        if ch is not None and os.getpid() == ch._owner:
            ch.close()

    return AtExit(close)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _run_pending() -> None:
    with _lock:
        left = list(_pending.values())
    for cleanup in left:
        try:
            cleanup.run()
        except Exception:  # one failure must not keep the others from running
            log.exception("cleaning up at exit failed")
