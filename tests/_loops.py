"""The event loops the asyncio API is tested on: asyncio's own and uvloop (what uvicorn and
many agent servers run). uvloop's transports are not asyncio's classes, it takes Unix
addresses as C strings, and it aborts the process when a closed fd is left in the loop, so
every asyncio conformance suite runs on both (the ``aio_run`` fixture of tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

LOOPS = ["asyncio", "uvloop"]

AioRun = Callable[[Coroutine[Any, Any, Any]], Any]


def runner_for(kind: str) -> AioRun:
    """A function that runs a coroutine to its end on a fresh loop of ``kind``."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            if factory is not None:
                assert type(runner.get_loop()).__module__.startswith("uvloop")
            return runner.run(coro)

    return run


class TurnCounter:
    """``async with TurnCounter() as c:`` counts in ``c.turns`` the turns the event loop gave
    another task while the body ran: 0 for a body that never lets the loop run (a send loop
    that never waits). Counted, not timed."""

    def __init__(self) -> None:
        self.turns = 0
        self._on = True
        self._task: asyncio.Future[None] | None = None

    async def _tick(self) -> None:
        while self._on:
            self.turns += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> TurnCounter:
        self._task = asyncio.ensure_future(self._tick())
        await asyncio.sleep(0)  # the ticker starts
        self.turns = 0
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._on = False
        if self._task is not None:
            await self._task
