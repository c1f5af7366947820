"""Running something when an event loop ends with a channel still open.

``asyncio.run()`` (and ``Runner.close()``) cancel every task still pending before closing the
loop: a channel the program never closed loses its tasks then (a sender, the writes under
way), before any other code can run. A task that waits for the channel's close is cancelled
in that same sweep, and that is the one moment a driver can still say what was lost (gRPC,
HTTP) or end the session for the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["at_loop_end"]

_WATCHING: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks


def at_loop_end(
    loop: asyncio.AbstractEventLoop, name: str, then: Callable[[], object]
) -> asyncio.Future[None]:
    """Call ``then()`` when ``loop``'s end cancels its tasks, unless the future returned is
    resolved first (the channel closed: its ``close()`` sets it)."""
    closed: asyncio.Future[None] = loop.create_future()

    async def watch() -> None:
        try:
            await closed
        except asyncio.CancelledError:
            then()
            raise

    task = loop.create_task(watch(), name=name)
    _WATCHING.add(task)
    task.add_done_callback(_WATCHING.discard)
    return closed
