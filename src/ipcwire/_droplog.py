"""A bounded log of repeated events (clients dropped or refused by a listener, handlers
that ended by an error under ``serve()``): the first few of each kind in a window are logged
one by one, the rest counted in one line."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Final

__all__ = ["DropLog"]

log = logging.getLogger("ipcwire")

# The first _LOG_BURST events of each kind in a window of _LOG_WINDOW seconds are logged one
# by one; the rest are counted, in one line as the window ends.
_LOG_BURST: Final = 5
_LOG_WINDOW: Final = 10.0


class DropLog:
    """A listener's log of the clients it drops or refuses, bounded: a flood of connections
    that never send a hello (or send garbage) wrote one line each, 36,265 in 12 s. The first
    ``_LOG_BURST`` of each kind in a window of ``_LOG_WINDOW`` seconds are logged as they
    come; the rest are counted and told in one line when the window ends (:meth:`due`, then
    :meth:`flush`, which the listener calls; and at its close): "unix:///x.sock: 36,260 more
    clients dropped or refused in the last 10 s, not logged one by one: 36,000 dropped: it
    was the oldest of 512 clients in their handshake; 260 ...". ``what`` names what is
    counted (``serve()`` counts "handlers ended by an error" with one). Thread-safe: a
    blocking ``serve()``'s handler threads share one."""

    def __init__(self, url: str, what: str = "clients dropped or refused") -> None:
        self.url = url
        self.what = what
        self._lock = threading.Lock()
        self._start = math.inf  # when the window began (time.monotonic()), inf: none yet
        self._logged: dict[str, int] = {}  # kind: how many logged one by one in the window
        self._counted: dict[str, int] = {}  # kind: how many not logged
        self._level = logging.INFO  # the highest level counted

    def log(
        self, level: int, kind: str, msg: str, *args: object, exc_info: BaseException | None = None
    ) -> None:
        """``log.log(level, msg, *args)``, unless ``kind`` had its share of this window."""
        now = time.monotonic()
        self.flush(now)
        with self._lock:
            if self._start == math.inf:
                self._start = now
            n = self._logged.get(kind, 0)
            if n >= _LOG_BURST:
                self._counted[kind] = self._counted.get(kind, 0) + 1
                self._level = max(self._level, level)
                return
            self._logged[kind] = n + 1
        log.log(level, msg, *args, exc_info=exc_info)

    def due(self) -> float | None:
        """When :meth:`flush` has a line to write (``time.monotonic()``), or None."""
        return self._start + _LOG_WINDOW if self._counted else None

    def flush(self, now: float | None = None, *, final: bool = False) -> None:
        """End the window if it is over (or ``final``: the listener closes), writing the count
        of what was not logged."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if now < self._start + _LOG_WINDOW and not final:
                return
            counted, level, start = self._counted, self._level, self._start
            self._start = math.inf
            self._logged = {}
            self._counted = {}
            self._level = logging.INFO
        if counted:
            kinds = sorted(counted.items(), key=lambda kv: -kv[1])
            log.log(
                level,
                "%s: %s more %s in the last %.3g s, not logged one by one: %s",
                self.url,
                f"{sum(counted.values()):,}",
                self.what,
                max(now - start, 0.0),
                "; ".join(f"{n:,} {kind}" for kind, n in kinds),
            )
