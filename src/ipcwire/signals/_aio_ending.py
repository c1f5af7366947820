"""The asyncio graceful shutdown's cleanup, and its exit, outlive the end of ``asyncio.run()``.

On a signal the shutdown cleans up in a task of its own, in reverse order of registration,
and the main coroutine often returns in the middle of it: ``serve()`` returns as soon as the
shutdown has closed its listener. ``asyncio.run()`` then cancels every task left and closes
the loop. It cancelled the shutdown's task with the rest: the cleanups after the listener's
never ran (a cache not flushed, a pid file left) and the ``SystemExit(exit_code)`` that
follows them was never raised (exit status 0).

So the shutdown's task, and each task its cleanups start (a listener's ``aclose()`` that
waits for a server's shutdown task, spawned children's ladders), refuse a cancel asked for
while the loop is not running: that is the end of ``asyncio.run()`` (or the same done by
hand), which then runs the loop until they are done, as it waits for every task it cancels.
Cancels from inside the loop (a timeout in a cleanup) work as usual. When the shutdown ends
there, it first does the rest of that end (the other tasks finish their cancellation, async
generators and the default executor are shut down), since the ``SystemExit`` it raises next
leaves that out.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Coroutine, Generator, Iterator
from typing import Any

__all__ = ["CleanupTask", "cleaning", "end_run"]

_cleaning: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ipcwire_graceful_shutdown_cleaning", default=False
)


class CleanupTask(asyncio.Task[Any]):
    """A task that the end of ``asyncio.run()`` does not cancel (see the module).

    ``run_ended``: once that end asked, the other tasks it is waiting for.
    """

    run_ended: set[asyncio.Task[Any]] | None = None

    def cancel(self, msg: Any | None = None) -> bool:
        loop = self.get_loop()
        if loop.is_running() or loop.is_closed():
            return super().cancel(msg)
        if self.run_ended is None:
            self.run_ended = asyncio.all_tasks(loop) - {self}
        return False


class _TaskFactory:
    """The loop's task factory while a cleanup runs: a task started by the cleanup (in its
    context) is a :class:`CleanupTask`; any other is made as before."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.users = 0

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kw: Any,
    ) -> asyncio.Future[Any]:
        if _cleaning.get():
            return CleanupTask(coro, loop=loop, **kw)
        if self.previous is not None:
            made: asyncio.Future[Any] = self.previous(loop, coro, **kw)
            return made
        return asyncio.Task(coro, loop=loop, **kw)


@contextlib.contextmanager
def cleaning(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Inside a :class:`CleanupTask`: the tasks started within are CleanupTasks too."""
    factory = loop.get_task_factory()
    mine = factory if isinstance(factory, _TaskFactory) else _TaskFactory(factory)
    if mine is not factory:
        loop.set_task_factory(mine)
    mine.users += 1
    token = _cleaning.set(True)
    try:
        yield
    finally:
        _cleaning.reset(token)
        mine.users -= 1
        if not mine.users and loop.get_task_factory() is mine:
            loop.set_task_factory(mine.previous)


async def end_run(loop: asyncio.AbstractEventLoop, others: set[asyncio.Task[Any]]) -> None:
    """What the end of ``asyncio.run()`` does after it cancelled the tasks left, before it
    closes the loop (the shutdown's ``SystemExit``, raised next, would leave it out)."""
    if others:
        await asyncio.wait(others)  # (cancelled: they run their finally blocks)
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
