"""Connect retries: exponential backoff with full jitter, up to a deadline (no I/O here)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Final

__all__ = ["backoff_delays"]

FIRST_DELAY: Final = 0.01
MAX_DELAY: Final = 1.0


def backoff_delays(first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> Iterator[float]:
    """Delays to sleep between attempts: uniform in [0, min(cap, first * 2**n)]."""
    ceiling = first
    while True:
        yield random.uniform(ceiling / 2, ceiling)
        ceiling = min(cap, ceiling * 2)
