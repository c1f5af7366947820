"""``ipcwire.aio`` has the blocking API's names: graceful_shutdown and terminate too (a
newcomer looked for them there, as ``ipcwire.graceful_shutdown`` suggests, and found none)."""

from __future__ import annotations

import ipcwire.signals.aio
from ipcwire import aio


def test_the_asyncio_signal_helpers_are_in_ipcwire_aio() -> None:
    assert aio.graceful_shutdown is ipcwire.signals.aio.graceful_shutdown
    assert aio.terminate is ipcwire.signals.aio.terminate
    assert {"graceful_shutdown", "terminate"} <= set(aio.__all__)
