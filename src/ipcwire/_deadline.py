"""Deadlines for the blocking drivers' waits (one place for the arithmetic and the Timeout).

A blocking call turns its ``timeout=`` into a ``time.monotonic()`` deadline once and, each
time it is about to wait again, asks ``seconds_left`` how long it may: ``None`` (no deadline,
wait as long as it takes) or the seconds to the deadline; once the deadline has passed, that
call raises the ``Timeout`` the caller described, so no wait loop can forget it or wait for a
negative time.
"""

from __future__ import annotations

import time

from ipcwire.errors import Timeout

__all__ = ["seconds_left"]


def seconds_left(deadline: float | None, message: str, endpoint: str | None) -> float | None:
    """Seconds until ``deadline`` (None when there is none); ``Timeout(message)`` once it passed.

    ``message`` says what did not happen and what to do, naming ``endpoint`` (DESIGN.md).
    """
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout(message, endpoint=endpoint)
    return left
