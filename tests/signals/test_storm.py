"""A waiter nobody reads holds each unread signal once, whatever a signal storm sends."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from ipcwire.errors import Timeout
from ipcwire.signals import SignalWaiter
from ipcwire.signals.aio import AioSignalWaiter

STORM = 2000


def test_a_blocking_waiter_coalesces_repeats_while_unread() -> None:
    """Each SIGUSR1 took one queue entry until read: 200,000 sent to a waiter that did not
    read held 21,764 entries (memory without bound). Now a signal not yet read is held once,
    the repeats are counted in statistics().dropped, and order of first arrival is kept."""
    with SignalWaiter(["USR1", "USR2"]) as waiter, SignalWaiter(["USR2"]) as marker:
        for _ in range(STORM):
            os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        # The dispatcher hands each signal to the waiters in the order they subscribed:
        # once the marker has USR2, the waiter has had every signal before it.
        assert marker.recv(timeout=10) is signal.SIGUSR2
        stats = waiter.statistics()
        assert stats.buffered_bytes == 2
        assert stats.dropped == STORM - 1
        assert waiter.recv(timeout=0) is signal.SIGUSR1
        assert waiter.recv(timeout=0) is signal.SIGUSR2
        with pytest.raises(Timeout):
            waiter.recv(timeout=0)
        os.kill(os.getpid(), signal.SIGUSR1)  # read already: it counts again
        assert waiter.recv(timeout=10) is signal.SIGUSR1
        assert waiter.statistics().messages_received == 3


def test_an_asyncio_waiter_coalesces_repeats_while_unread() -> None:
    async def main() -> None:
        waiter = AioSignalWaiter(["USR1", "USR2"])
        marker = AioSignalWaiter(["USR2"])
        try:
            for n in range(STORM):
                os.kill(os.getpid(), signal.SIGUSR1)
                if n % 50 == 0:  # let the loop read its wakeup socket before it fills up
                    await asyncio.sleep(0)
            os.kill(os.getpid(), signal.SIGUSR2)
            # The loop runs the handlers in order of arrival: once the marker has USR2,
            # the waiter has had every signal before it.
            assert await marker.recv(timeout=10) is signal.SIGUSR2
            stats = waiter.statistics()
            assert stats.buffered_bytes == 2
            assert stats.dropped == STORM - 1
            assert await waiter.recv(timeout=0) is signal.SIGUSR1
            assert await waiter.recv(timeout=0) is signal.SIGUSR2
            with pytest.raises(Timeout):
                await waiter.recv(timeout=0)
            os.kill(os.getpid(), signal.SIGUSR1)
            assert await waiter.recv(timeout=10) is signal.SIGUSR1
            assert waiter.statistics().messages_received == 3
        finally:
            await waiter.aclose()
            await marker.aclose()

    asyncio.run(main())
