"""``asyncio.timeout`` for the asyncio drivers' waits, with ipcwire's rules for ``timeout=``.

``asyncio.timeout(nan)`` schedules a timer at NaN, which the event loop can never order: the
loop spun at 100% CPU and the wait never ended (every asyncio driver's ``accept``, ``recv``
and ``request`` with ``timeout=nan``). Here NaN is a ``ConfigurationError`` (as on the blocking
drivers, ``ipcwire._deadline``), and a timeout over ``NO_LIMIT`` is no limit.
"""

from __future__ import annotations

import asyncio
import math

from ipcwire._deadline import limit, not_a_number

__all__ = ["within", "within_at"]


def within(delay: float | None) -> asyncio.Timeout:
    """``asyncio.timeout(delay)``; None or over ``NO_LIMIT``: no limit.

    Raises:
        ConfigurationError: ``delay`` is NaN.
    """
    return asyncio.timeout(limit(delay))


def within_at(when: float | None) -> asyncio.Timeout:
    """``asyncio.timeout_at(when)`` (a deadline on the loop's clock, or None).

    Raises:
        ConfigurationError: ``when`` is NaN (a deadline made from ``timeout=nan``).
    """
    if when is not None and math.isnan(when):
        raise not_a_number()
    return asyncio.timeout_at(when)
