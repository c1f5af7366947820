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

import math
import struct
import time
from typing import Final

from ipcwire.errors import ConfigurationError, Timeout

__all__ = ["NO_LIMIT", "limit", "not_a_number", "not_seconds", "seconds_left", "timeval"]

NO_LIMIT: Final = 1e9  # seconds (about 31 years): a longer timeout= is no limit
_TIMEVAL: Final = struct.Struct("@ll")  # struct timeval (long seconds, microseconds)


def not_a_number(endpoint: str | None = None) -> ConfigurationError:
    """The error for ``timeout=nan`` (which thread waits, poll() and deadlines would each take
    differently: some spun forever, some raised a bare ValueError)."""
    where = f" for {endpoint}" if endpoint else ""
    return ConfigurationError(
        f"timeout=nan{where} is not a number of seconds: give seconds (0 does not wait) or None "
        "to wait without a limit",
        endpoint=endpoint,
    )


def not_seconds(timeout: object, endpoint: str | None = None) -> ConfigurationError:
    """The error for a ``timeout=`` that is not a number (``"1"``, a list): a bare TypeError
    from the arithmetic said neither which argument nor what it takes."""
    where = f" for {endpoint}" if endpoint else ""
    return ConfigurationError(
        f"timeout={timeout!r}{where} is not a number of seconds ({type(timeout).__name__}): "
        f"give an int or float (0 does not wait), or None to wait without a limit",
        endpoint=endpoint,
    )


def limit(timeout: float | None, endpoint: str | None = None) -> float | None:
    """``timeout`` as a wait takes it: None (no limit) for one over :data:`NO_LIMIT`.

    Raises:
        ConfigurationError: NaN, or not a number (naming ``endpoint`` when given).
    """
    try:
        if timeout is None or timeout > NO_LIMIT:
            return None
        if math.isnan(timeout):
            raise not_a_number(endpoint)
    except TypeError:  # (the check costs nothing on the common path: only here)
        raise not_seconds(timeout, endpoint) from None
    return timeout


def seconds_left(deadline: float | None, message: str, endpoint: str | None) -> float | None:
    """Seconds until ``deadline`` (None when there is none); ``Timeout(message)`` once it passed.

    ``message`` says what did not happen and what to do, naming ``endpoint`` (DESIGN.md).
    """
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout(message, endpoint=endpoint)
    if math.isnan(left):  # a deadline made from timeout=nan
        raise not_a_number(endpoint)
    return None if left > NO_LIMIT else left


def timeval(timeout: float | None) -> bytes:
    """``timeout`` as SO_RCVTIMEO/SO_SNDTIMEO take it, a ``struct timeval``: all zeros (no
    limit to the kernel) for None or over :data:`NO_LIMIT`; a positive wait is at least 1 µs,
    never rounded to "no limit", and a negative one (-inf too) is 1 µs.

    Raises:
        ConfigurationError: NaN.
    """
    try:
        if timeout is None or timeout > NO_LIMIT:
            return _TIMEVAL.pack(0, 0)
        if math.isnan(timeout):
            raise not_a_number()
    except TypeError:
        raise not_seconds(timeout) from None
    usec = max(1, round(max(timeout, 0.0) * 1_000_000))
    return _TIMEVAL.pack(usec // 1_000_000, usec % 1_000_000)
