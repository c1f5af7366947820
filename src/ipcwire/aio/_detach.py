"""An await that leaves the operation running when the awaiting task is cancelled or woken.

Some libraries end a whole conversation when one of their awaits is cancelled: grpc.aio
cancels the RPC when a ``read()`` is. ``asyncio.shield`` would keep the read going, but costs
one more pass of the event loop on every await (the shielded future's callback wakes an outer
future, whose callback wakes the task): on a round trip that is measurable (``ipcwire bench``,
docs/mechanisms/grpc.md). :class:`Detachable` costs none: the task waits on the library's own
future, through a stand-in (the Detachable itself) whose ``cancel()`` does not cancel that
future but takes the task off it. The cancelled (or :meth:`Detachable.interrupt`-ed) task
gets its ``CancelledError`` (or :class:`Interrupted`) at once, and the operation, suspended
where it was, is handed to ``on_detach`` as an awaitable that finishes it (in a task of the
caller's choosing), so nothing it would have returned is lost.

This relies on what asyncio documents for future-like objects (``asyncio.isfuture``: an
``_asyncio_future_blocking`` attribute, ``add_done_callback``, ``cancel``, ``result``,
``get_loop``): a Detachable is one while its task waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from contextvars import Context
from typing import Any, Generic, TypeVar

__all__ = ["Detachable", "Interrupted"]

T = TypeVar("T")


class Interrupted(Exception):
    """The awaiting task was woken by :meth:`Detachable.interrupt`; the operation goes on in
    what ``on_detach`` was given."""


class Detachable(Generic[T]):
    """``await Detachable(aw, on_detach)`` is ``await aw``, except that a cancellation of the
    awaiting task (and :meth:`interrupt`) does not reach ``aw``: the task gets its error at
    once and ``on_detach`` gets an awaitable that finishes ``aw`` from where it stopped.
    Await it once.

    While the task waits, this object is what it waits on, in place of the library's future
    ``_inner``: the task's wake-up is registered on ``_inner`` itself (so a result wakes it
    with no extra pass of the loop); ``cancel()`` takes it off ``_inner`` and wakes the task
    with the error instead. (One object for both, and ``get_loop`` the inner future's own
    method: each is a Python call less per await, measured on grpc's round trip.)"""

    __slots__ = (
        "_asyncio_future_blocking",
        "_callbacks",
        "_error",
        "_inner",
        "_it",
        "_on_detach",
        "detached",
        "get_loop",
    )

    def __init__(self, aw: Awaitable[T], on_detach: Callable[[Awaitable[T]], object]) -> None:
        self._it: Any = aw.__await__()
        self._on_detach = on_detach
        self._inner: asyncio.Future[Any] | None = None  # the future the task waits on now
        self._error: BaseException | None = None
        # (None until the task waits: asyncio.isfuture() is False for a Detachable)
        self._asyncio_future_blocking: bool | None = None
        self.detached = False  # the operation was handed to on_detach

    # -- what the awaiting task calls (the future-like protocol) ------------------------------
    # (set on each wait: the inner future's get_loop, and the callbacks put on it for us)
    get_loop: Callable[[], asyncio.AbstractEventLoop]
    _callbacks: list[tuple[Callable[[Any], object], Context | None]]

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: Context | None = None
    ) -> None:
        self._callbacks.append((fn, context))
        self._inner.add_done_callback(fn, context=context)  # type: ignore[union-attr]

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        self._callbacks = [(f, c) for f, c in self._callbacks if f != fn]
        return self._inner.remove_done_callback(fn)  # type: ignore[union-attr]

    def done(self) -> bool:
        return self._error is not None or self._inner is None or self._inner.done()

    def cancelled(self) -> bool:
        return isinstance(self._error, asyncio.CancelledError)

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._inner.result()  # type: ignore[union-attr]

    def exception(self) -> BaseException | None:
        if self._error is not None:
            return self._error
        return self._inner.exception()  # type: ignore[union-attr]

    def cancel(self, msg: Any | None = None) -> bool:
        return self._wake(asyncio.CancelledError() if msg is None else asyncio.CancelledError(msg))

    # -- the awaiting side ---------------------------------------------------------------------
    def interrupt(self) -> bool:
        """Wake the awaiting task with :class:`Interrupted` (the operation goes to
        ``on_detach``). False if it cannot be woken so: not waiting, or already woken (its
        next step then sees the operation's result)."""
        return self._wake(Interrupted())

    def _wake(self, error: BaseException) -> bool:
        """Wake the task with ``error`` (False, and nothing done, if it does not wait on a
        pending future: between steps, or ``_inner`` is done and its callbacks, the task's
        wake-up among them, are already scheduled)."""
        inner = self._inner
        if inner is None or self._error is not None or inner.done():
            return False
        self._error = error
        call_soon = inner.get_loop().call_soon
        for fn, context in self._callbacks:
            inner.remove_done_callback(fn)
            call_soon(fn, self, context=context)
        self._callbacks = []
        return True

    def __await__(self) -> Generator[Any, None, T]:
        it = self._it
        value: Any = None
        while True:
            try:
                step = it.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value = None
            if step is None:  # a bare yield (asyncio.sleep(0)): one pass of the loop
                try:
                    value = yield None
                except BaseException:
                    self._hand_over(None)
                    raise
                continue
            self._inner = step
            self._callbacks = []
            self.get_loop = step.get_loop
            self._asyncio_future_blocking = True
            step._asyncio_future_blocking = False
            try:
                yield self
            except BaseException as exc:
                woken = self._error is not None
                self._inner = None
                self._asyncio_future_blocking = None  # (a future only while the task waits)
                if not woken and step.done() and _outcome_of(step, exc):
                    continue  # the future failed: the operation reads that itself, as usual
                for fn, _ in self._callbacks:  # (off the future it still waits on)
                    step.remove_done_callback(fn)
                self._callbacks = []
                self._hand_over(step)
                raise
            self._inner = None
            self._asyncio_future_blocking = None

    def _hand_over(self, pending: asyncio.Future[Any] | None) -> None:
        self.detached = True
        self._on_detach(_Resume(self._it, pending))

    def __repr__(self) -> str:
        return f"<detachable wait on {self._inner!r}>"


class _Resume(Generic[T]):
    """Finishes an operation suspended on ``pending`` (None: at a bare yield)."""

    __slots__ = ("_it", "_pending")

    def __init__(self, it: Any, pending: asyncio.Future[Any] | None) -> None:
        self._it = it
        self._pending = pending

    def __await__(self) -> Generator[Any, None, T]:
        it = self._it
        pending = self._pending
        error: BaseException | None = None
        while True:
            if pending is not None and not pending.done():
                pending._asyncio_future_blocking = True
                try:
                    yield pending
                except BaseException as exc:  # this task was cancelled: so is ``pending``
                    error = exc
            try:
                step = it.send(None) if error is None else it.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            error = None
            pending = step
            if step is None:
                try:
                    yield None
                except BaseException as exc:
                    error = exc
            else:
                step._asyncio_future_blocking = False


def _outcome_of(future: asyncio.Future[Any], exc: BaseException) -> bool:
    """Whether ``exc``, thrown into the task that waited on the done ``future``, is the
    future's own failure (its exception, or its cancellation) rather than a cancellation of
    the task that came while the future's callbacks were pending."""
    if future.cancelled():
        return True
    return future.exception() is exc
