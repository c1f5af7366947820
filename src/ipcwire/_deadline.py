"""Deadlines for the blocking drivers' waits (one place for the arithmetic and the Timeout).

A blocking call turns its ``timeout=`` into a ``time.monotonic()`` deadline once and, each
time it is about to wait again, asks ``seconds_left`` how long it may: ``None`` (no deadline,
wait as long as it takes) or the seconds to the deadline; once the deadline has passed, that
call raises the ``Timeout`` the caller described, so no wait loop can forget it or wait for a
negative time.

A ``timeout=`` longer than :data:`NO_LIMIT` (``float("inf")`` included) means no limit:
threads' waits and socket timeouts refuse such values (``OverflowError``), and nobody waits
31 years on purpose.
"""

from __future__ import annotations

import time
from typing import Final

from ipcwire.errors import Timeout

__all__ = ["NO_LIMIT", "limit", "seconds_left"]

NO_LIMIT: Final = 1e9  # seconds (about 31 years): a longer timeout= is no limit


def limit(timeout: float | None) -> float | None:
    """``timeout`` as a wait takes it: None (no limit) for one over :data:`NO_LIMIT`."""
    return None if timeout is not None and timeout > NO_LIMIT else timeout


def seconds_left(deadline: float | None, message: str, endpoint: str | None) -> float | None:
    """Seconds until ``deadline`` (None when there is none); ``Timeout(message)`` once it passed.

    ``message`` says what did not happen and what to do, naming ``endpoint`` (DESIGN.md).
    """
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout(message, endpoint=endpoint)
    return None if left > NO_LIMIT else left
