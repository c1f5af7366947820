"""The blocking listener's thread pool, which survives the process's thread limit.

grpcio hands each RPC to the pool from its one serving thread. A pool that has no idle thread
starts one; at the process's limit of processes/threads (RLIMIT_NPROC, a cgroup's pids.max)
that raises ``RuntimeError: can't start new thread`` in grpcio's serving thread, which dies:
the port stays open, clients connect, and no RPC is ever answered again.

:class:`Pool` catches that and runs the RPC's handler in the serving thread instead, marked
(``refusing()``) so that the listener's handler only ends the RPC with RESOURCE_EXHAUSTED
(which never waits), and logs one warning. The RPC's work item is already in the pool's queue
by then (the pool queues before it starts a thread): it is run at most once, so a thread that
starts later finds it done. That thread then counts itself idle once more than it is (the
pool counts idle threads with a semaphore, released after each item, which that item never
took), and the next RPC would wait in the queue for a thread that never comes: so the next
``submit`` takes that count back first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

__all__ = ["Pool", "refusing"]

log = logging.getLogger("ipcwire")
_here = threading.local()


def refusing() -> str | None:
    """In a handler: why it must refuse its RPC (no thread could be started for it), else
    None."""
    reason: str | None = getattr(_here, "refusing", None)
    return reason


class _Once:
    """``fn``, called at most once (by the pool's thread or in its place)."""

    def __init__(self, fn: Callable[..., Any], late: Callable[[], None]) -> None:
        self._fn = fn
        self._late = late  # called by a second call
        self._lock = threading.Lock()
        self._done = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            done, self._done = self._done, True
        if done:
            self._late()
            return None
        return self._fn(*args, **kwargs)


class Pool(futures.ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` for ``grpc.server`` that refuses an RPC it has no thread for
    (see the module's docstring) instead of killing grpcio's serving thread."""

    def __init__(self, max_workers: int, url: str) -> None:
        super().__init__(max_workers, thread_name_prefix="ipcwire-grpc")
        self.url = url
        self._owed = 0  # idle counts released after a refused RPC's work item (see above)
        self._owed_lock = threading.Lock()

    def _late(self) -> None:
        with self._owed_lock:
            self._owed += 1

    def _settle(self) -> None:
        idle: threading.Semaphore | None = getattr(self, "_idle_semaphore", None)
        if idle is None:
            return
        with self._owed_lock:
            while self._owed and idle.acquire(timeout=0):
                self._owed -= 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        if self._owed:
            self._settle()
        once = _Once(fn, self._late)
        try:
            return super().submit(once, *args, **kwargs)
        except RuntimeError as exc:
            if getattr(self, "_shutdown", False) or getattr(futures.thread, "_shutdown", False):
                raise  # shut down: not a thread that failed to start
            reason = str(exc)
        log.warning(
            "%s refused a client: a thread for its channel could not be started "
            "(%s): this process is at its limit of processes/threads (RLIMIT_NPROC, or the "
            "cgroup's pids.max). Raise that limit, or serve fewer clients at once "
            "(listen(max_channels=), serve(max_channels=))",
            self.url,
            reason,
        )
        done: futures.Future[Any] = futures.Future()
        _here.refusing = reason
        try:
            done.set_result(once(*args, **kwargs))
        except BaseException as err:
            done.set_exception(err)
        finally:
            _here.refusing = None
        return done
