"""``request(timeout=)`` on an asyncio spawn channel raises when its timeout passes, not after
the child's shutdown: closing the channel (so that a late reply cannot answer a later request)
runs the shutdown ladder, which goes on by itself. Before, the request awaited the whole
ladder: with a busy agent, request(timeout=0.5) raised after 2.5 s (found writing
docs/asyncio.md)."""

from __future__ import annotations

import os
import signal
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
        agent = await aio.spawn([sys.executable, "-c", BUSY], exit_timeout=30, term_timeout=30)
        start = time.monotonic()
        with pytest.raises(Timeout):
            await agent.request({"op": "work"}, timeout=0.3)
        took = time.monotonic() - start
        assert agent.closed
        assert took < 10, took  # the ladder alone takes 30 s (the child does not read stdin)
        os.kill(agent.pid, signal.SIGKILL)  # (the ladder would wait 30 s)
        await agent.aclose()  # the ladder's end: the child is gone
        assert agent.returncode is not None

    aio_run(main())


def test_a_blocking_request_timeout_is_not_stretched_by_the_childs_shutdown() -> None:
    """The same on the blocking API: request(timeout=0.3) raised after the whole ladder (3 s
    here). The channel is closed when it raises; close() then waits for the ladder."""
    agent = ipcwire.spawn([sys.executable, "-c", BUSY], exit_timeout=30, term_timeout=30)
    start = time.monotonic()
    with pytest.raises(Timeout):
        agent.request({"op": "work"}, timeout=0.3)
    took = time.monotonic() - start
    assert agent.closed
    with pytest.raises(ChannelClosed):
        agent.send({"op": "late"})
    assert took < 10, took  # the ladder alone takes 30 s (the child does not read stdin)
    os.kill(agent.pid, signal.SIGKILL)  # (the ladder would wait 30 s)
    agent.close()  # waits for the ladder's end: the child is gone
    assert agent.returncode is not None


class _Interrupt(BaseException):
    """What a signal handler raises (as KeyboardInterrupt is)."""


def test_an_interrupted_blocking_request_is_not_stretched_by_the_childs_shutdown() -> None:
    """Ctrl-C (here a SIGALRM handler's BaseException) during request() closes the channel as
    a timeout does, the ladder going on in the background: before, close() ran the whole
    ladder first (Ctrl-C took 2-4 s; a notebook's kernel restart SIGTERMed the kernel
    mid-way, and its other children were orphaned: helper-139)."""

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupt

    agent = ipcwire.spawn([sys.executable, "-c", BUSY], exit_timeout=30, term_timeout=30)
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        start = time.monotonic()
        with pytest.raises(_Interrupt):
            agent.request({"op": "work"}, timeout=30)
        took = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert agent.closed
    with pytest.raises(ChannelClosed, match="interrupted"):
        agent.send({"op": "late"})
    assert took < 10, took  # the ladder alone takes 30 s (the child does not read stdin)
    os.kill(agent.pid, signal.SIGKILL)  # (the ladder would wait 30 s)
    agent.close()  # waits for the ladder's end: the child is gone
    assert agent.returncode is not None
