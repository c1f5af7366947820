"""A listening socket for ``loop.create_server`` that runs out of descriptors quietly.

When ``accept()`` fails for want of descriptors (EMFILE, ENFILE) or memory, the client stays
in the kernel's backlog and the socket stays readable. asyncio's selector loop then stops
watching the socket and tries again a second later, which is right; but it goes on calling
``accept()`` in the same pass (python/cpython#151615, fixed upstream in 2026; 3.11 here), so
every pass logs up to ``backlog`` tracebacks and schedules as many retries, each of which
makes another pass: a listener out of descriptors logged about 6,000 tracebacks a second for
as long as the shortage lasted. Every listener that hands its socket to ``create_server``
(unix, tcp, ws, http, sse; blocking http and sse run such a server in a thread) passes it
through :func:`accept_backoff`: the first failure of a pass is raised, with a message that
names the endpoint and the fix, and the next call of the same pass says "nothing pending",
which ends the pass. One log record and one retry a second, on every version of asyncio.
"""

from __future__ import annotations

import errno
import socket
import weakref
from typing import Any

from ipcwire._oserror import ACCEPT_RETRY, OUT_OF_RESOURCES, translate

__all__ = ["accept_backoff"]


class _State:
    __slots__ = ("failed", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.failed = False  # the last accept() failed for want of descriptors


# per socket; the class below has no room of its own (its layout must stay socket.socket's)
_STATES: weakref.WeakKeyDictionary[socket.socket, _State] = weakref.WeakKeyDictionary()


class _BackoffSocket(socket.socket):
    """A listening socket whose ``accept()`` ends the caller's pass after a shortage."""

    __slots__ = ()

    def accept(self) -> tuple[socket.socket, Any]:
        state = _STATES.get(self)
        if state is None:  # a copy (dup() keeps the class): a plain socket
            return super().accept()
        if state.failed:
            # the same pass of the loop's accept callback, right after the failure below:
            # "nothing pending" ends it (the loop already stopped watching the socket)
            state.failed = False
            raise BlockingIOError(errno.EAGAIN, "paused after running out of descriptors")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno not in OUT_OF_RESOURCES:
                raise
            state.failed = True
            raise OSError(exc.errno, _explain(exc, state.url)) from None


def _explain(exc: OSError, url: str) -> str:
    err = translate(exc, url, "accepting on")
    return f"{err}; the client waits, accepting again in {ACCEPT_RETRY:g} s"


def accept_backoff(sock: socket.socket, url: str) -> None:
    """Make ``sock`` (a listening socket about to go to ``create_server``) stop the loop's
    accepting pass at its first shortage of descriptors, in place."""
    _STATES[sock] = _State(url)
    sock.__class__ = _BackoffSocket
