"""One daemon thread that runs callbacks at deadlines (cancelling overdue gRPC calls,
closing channels whose last call ended). Arming and disarming cost a lock and a heap push;
the thread wakes only when the earliest deadline changes or passes."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import sys
import threading
import time
from collections.abc import Callable

from ipcwire._deadline import NO_LIMIT

__all__ = ["Token", "after"]

log = logging.getLogger("ipcwire")


class Token:
    """A pending callback; :meth:`cancel` it when it is no longer wanted."""

    __slots__ = ("fn", "state")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.state = 0  # 0 pending, 1 cancelled, 2 fired

    def cancel(self) -> bool:
        """Disarm; False if the callback already ran (or is running). The callback is let go
        at once: the heap keeps the token until its deadline, and must not keep what the
        callback refers to (a gRPC call and its channel)."""
        with _cond:
            if self.state == 0:
                self.state = 1
                self.fn = _nothing
                global _cancelled
                _cancelled += 1
                return True
            return self.state == 1


def _nothing() -> None:
    pass


_cond = threading.Condition(threading.Lock())
_heap: list[tuple[float, int, Token]] = []
_seq = itertools.count()
_cancelled = 0
_thread: threading.Thread | None = None


def after(delay: float, fn: Callable[[], object]) -> Token:
    """Run ``fn`` in the watchdog thread after ``delay`` seconds, unless cancelled. A delay
    over NO_LIMIT (inf) is NO_LIMIT: the thread's wait would raise OverflowError, and the
    thread is every channel's.

    Raises:
        ValueError: ``delay`` is NaN (it would disorder the heap of deadlines).
    """
    global _thread
    if math.isnan(delay):
        raise ValueError("a watchdog delay must be a number of seconds, not NaN")
    delay = min(delay, NO_LIMIT)
    tok = Token(fn)
    entry = (time.monotonic() + delay, next(_seq), tok)
    with _cond:
        heapq.heappush(_heap, entry)
        if _thread is None:
            if sys.is_finalizing():
                # a thread started now never runs, and start() waits for it for ever; the
                # process is ending, so nothing is left to watch
                return tok
            _thread = threading.Thread(target=_run, name="ipcwire watchdog", daemon=True)
            _thread.start()
        elif _heap[0] is entry:
            _cond.notify()
    return tok


def _compact() -> None:
    global _cancelled
    _heap[:] = [e for e in _heap if e[2].state == 0]
    heapq.heapify(_heap)
    _cancelled = 0


def _run() -> None:
    global _cancelled
    while True:
        with _cond:
            while True:
                if _cancelled > 1024 and _cancelled > len(_heap) // 2:
                    _compact()
                while _heap and _heap[0][2].state != 0:
                    heapq.heappop(_heap)
                    _cancelled = max(_cancelled - 1, 0)
                if not _heap:
                    _cond.wait()
                    continue
                wait = _heap[0][0] - time.monotonic()
                if wait <= 0:
                    tok = heapq.heappop(_heap)[2]
                    tok.state = 2
                    fn, tok.fn = tok.fn, _nothing
                    del tok
                    break
                _cond.wait(wait)
        try:
            fn()
        except Exception:
            log.exception("a watchdog callback failed")
        del fn  # not kept (with what it refers to) while the thread waits for the next one
