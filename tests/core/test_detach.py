"""ipcwire.aio._detach: an await whose cancellation does not reach the operation, and costs no
extra pass of the event loop (what grpc's asyncio recv() needs: grpc.aio cancels the RPC
with a cancelled read). Real event loops, asyncio's and uvloop's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from tests._loops import AioRun

from ipcwire.aio._detach import Detachable, Interrupted


class Op:
    """An operation in the style of grpc.aio's read: awaits futures the test resolves, and
    records a cancellation that reaches it (as grpc.aio then cancels the RPC)."""

    def __init__(self, steps: int = 1) -> None:
        loop = asyncio.get_running_loop()
        self.futures = [loop.create_future() for _ in range(steps)]
        self.cancelled = False
        self.finished = False

    async def run(self) -> list[Any]:
        got = []
        try:
            for f in self.futures:
                got.append(await f)
                await asyncio.sleep(0)  # a bare yield between the steps
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True
        return got


class Handed:
    def __init__(self) -> None:
        self.resumes: list[Awaitable[Any]] = []

    def __call__(self, resume: Awaitable[Any]) -> None:
        self.resumes.append(resume)

    async def finish(self) -> Any:
        assert len(self.resumes) == 1
        return await asyncio.get_running_loop().create_task(_awaited(self.resumes[0]))


async def _awaited(aw: Awaitable[Any]) -> Any:
    return await aw


def test_the_result_comes_back_with_no_extra_pass_of_the_loop(aio_run: AioRun) -> None:
    async def main() -> tuple[list[Any], list[str], list[str]]:
        loop = asyncio.get_running_loop()
        orders = []
        for detachable in (True, False):
            fut = loop.create_future()
            order: list[str] = []

            async def waiter(
                fut: asyncio.Future[Any] = fut, order: list[str] = order, d: bool = detachable
            ) -> Any:
                aw = Detachable(_awaited(fut), Handed()) if d else asyncio.shield(_awaited(fut))
                got = await aw
                order.append("resumed")
                return got

            task = loop.create_task(waiter())
            await asyncio.sleep(0)  # the waiter waits
            fut.set_result("m")
            loop.call_soon(order.append, "next pass")
            await task
            orders.append(order)
            result = task.result()
        return result, orders[0], orders[1]

    result, detachable, shielded = aio_run(main())
    assert result == "m"
    # The task resumes in the pass its future's callbacks run in; through asyncio.shield it
    # takes one pass more (the comparison shows the test can tell).
    assert detachable[0] == "resumed", detachable
    assert shielded[0] == "next pass", shielded


def test_a_cancelled_wait_leaves_the_operation_running_and_its_result_is_handed_over(
    aio_run: AioRun,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        op = Op(steps=2)
        handed = Handed()
        task = loop.create_task(_awaited(Detachable(op.run(), handed)))
        await asyncio.sleep(0)
        op.futures[0].set_result("a")
        await asyncio.sleep(0)  # the first step is taken; the second waits
        await asyncio.sleep(0)
        task.cancel("stop")
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not op.cancelled and not op.futures[1].cancelled()
        op.futures[1].set_result("b")
        assert await handed.finish() == ["a", "b"]
        assert op.finished and not op.cancelled

    aio_run(main())


def test_cancelled_after_the_result_came_but_before_the_task_ran_loses_nothing(
    aio_run: AioRun,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        op = Op()
        handed = Handed()
        task = loop.create_task(_awaited(Detachable(op.run(), handed)))
        await asyncio.sleep(0)
        op.futures[0].set_result("m")  # the task's wake-up is scheduled...
        task.cancel()  # ...and the cancellation comes first
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await handed.finish() == ["m"]

    aio_run(main())


def test_a_timeout_hands_the_operation_over(aio_run: AioRun) -> None:
    async def main() -> None:
        op = Op()
        handed = Handed()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0):
                await Detachable(op.run(), handed)
        assert not op.cancelled
        op.futures[0].set_result("late")
        assert await handed.finish() == ["late"]

    aio_run(main())


def test_interrupt_wakes_the_task_with_interrupted(aio_run: AioRun) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        op = Op()
        handed = Handed()
        d = Detachable(op.run(), handed)
        assert not d.interrupt()  # nobody waits yet
        task = loop.create_task(_awaited(d))
        await asyncio.sleep(0)
        assert d.interrupt()
        assert not d.interrupt()  # once
        with pytest.raises(Interrupted):
            await task
        assert d.detached and not op.cancelled
        op.futures[0].set_result("m")
        assert await handed.finish() == ["m"]

    aio_run(main())


def test_cancelling_the_task_that_finishes_it_reaches_the_operation(aio_run: AioRun) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        op = Op()
        handed = Handed()
        task = loop.create_task(_awaited(Detachable(op.run(), handed)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        finisher = loop.create_task(_awaited(handed.resumes[0]))
        await asyncio.sleep(0)
        finisher.cancel()  # as any task's cancel: the operation sees it
        with pytest.raises(asyncio.CancelledError):
            await finisher
        assert op.cancelled and op.futures[0].cancelled()

    aio_run(main())


def test_errors_of_the_operation_pass_through(aio_run: AioRun) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        op = Op()
        handed = Handed()
        task = loop.create_task(_awaited(Detachable(op.run(), handed)))
        await asyncio.sleep(0)
        op.futures[0].set_exception(ConnectionResetError("gone"))
        with pytest.raises(ConnectionResetError, match="gone"):
            await task
        assert handed.resumes == []

    aio_run(main())


def test_a_detachable_is_a_future_only_while_its_task_waits(aio_run: AioRun) -> None:
    # (asyncio.isfuture: the ``_asyncio_future_blocking`` attribute is not None) Before, it
    # stayed one after its wait: not a harm while each is awaited once, but not what it says.
    async def main() -> list[bool]:
        op = Op(steps=2)
        d = Detachable(op.run(), Handed())
        seen = [asyncio.isfuture(d)]
        task = asyncio.get_running_loop().create_task(_awaited(d))
        await asyncio.sleep(0)  # the task waits on the first step
        seen.append(asyncio.isfuture(d))
        op.futures[0].set_result(1)
        op.futures[1].set_result(2)
        assert await task == [1, 2]
        seen.append(asyncio.isfuture(d))
        return seen

    assert aio_run(main()) == [False, True, False]
