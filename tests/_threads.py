"""Run a call that may block in a thread, and join it with a bound: a lost wake-up then fails
the test (the thread is a daemon and is left behind) instead of hanging the suite."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

BOUND = 30.0  # seconds a blocked call may take before the test calls it a hang


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``fn`` in a daemon thread; the list gets its result or the exception it raised."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def finished(t: threading.Thread, bound: float = BOUND) -> bool:
    """Join ``t`` for at most ``bound`` seconds; True if it ended."""
    t.join(bound)
    return not t.is_alive()
