"""``request(timeout=)`` on an asyncio spawn channel raises when its timeout passes, not after
the child's shutdown: closing the channel (so that a late reply cannot answer a later request)
runs the shutdown ladder, which goes on by itself. Before, the request awaited the whole
ladder: with a busy agent, request(timeout=0.5) raised after 2.5 s (found writing
docs/asyncio.md)."""

from __future__ import annotations

import sys
import time

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelClosed, Timeout

BUSY = "import ipcwire, time\nch = ipcwire.stdio()\nch.recv()\ntime.sleep(60)\n"


def test_a_request_timeout_is_not_stretched_by_the_childs_shutdown(aio_run: AioRun) -> None:
    async def main() -> None:
        agent = await aio.spawn([sys.executable, "-c", BUSY], exit_timeout=3, term_timeout=3)
        start = time.monotonic()
        with pytest.raises(Timeout):
            await agent.request({"op": "work"}, timeout=0.3)
        took = time.monotonic() - start
        assert agent.closed
        assert took < 2.5, took  # the ladder alone takes 3 s (the child does not read stdin)
        await agent.aclose()  # the ladder's end: the child is gone
        assert agent.returncode is not None

    aio_run(main())


def test_a_blocking_request_timeout_is_not_stretched_by_the_childs_shutdown() -> None:
    """The same on the blocking API: request(timeout=0.3) raised after the whole ladder (3 s
    here). The channel is closed when it raises; close() then waits for the ladder."""
    agent = ipcwire.spawn([sys.executable, "-c", BUSY], exit_timeout=3, term_timeout=3)
    start = time.monotonic()
    with pytest.raises(Timeout):
        agent.request({"op": "work"}, timeout=0.3)
    took = time.monotonic() - start
    assert agent.closed
    with pytest.raises(ChannelClosed):
        agent.send({"op": "late"})
    assert took < 2.5, took  # the ladder alone takes 3 s (the child does not read stdin)
    agent.close()  # waits for the ladder's end: the child is gone
    assert agent.returncode is not None
