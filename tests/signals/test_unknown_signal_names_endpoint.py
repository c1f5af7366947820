"""An unknown signal name or number is a ``ConfigurationError`` that names the endpoint.

Before, ``listen("signal:USR1,NOPE")``, ``connect("signal:PID").send(999)`` and
``graceful_shutdown(signals=["NOPE"])`` said only "unknown signal 'NOPE'; known: ..." or
"999 is not a signal number on this platform" (no endpoint, and for a number no fix), and the
error's ``endpoint`` was None, on both APIs.
"""

from __future__ import annotations

import asyncio
import os

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError
from ipcwire.signals import SignalWaiter, graceful_shutdown
from ipcwire.signals.aio import graceful_shutdown as agraceful_shutdown


def _check(exc: ConfigurationError, endpoint: str) -> None:
    assert exc.endpoint == endpoint, exc
    assert str(exc).startswith(f"{endpoint}: "), exc
    assert "USR1" in str(exc), exc  # the names to use instead


def test_waiting_for_an_unknown_signal_names_the_endpoint() -> None:
    with pytest.raises(ConfigurationError) as info:
        ipcwire.listen("signal:USR1,NOPE")
    _check(info.value, "signal:USR1,NOPE")
    with pytest.raises(ConfigurationError) as info:
        SignalWaiter(["USR1", "NOPE"])
    _check(info.value, "signal:USR1,NOPE")
    with pytest.raises(ConfigurationError) as info:
        graceful_shutdown(signals=["TERM", 999])
    _check(info.value, "signal:TERM,999")


def test_sending_an_unknown_signal_names_the_endpoint() -> None:
    url = f"signal:{os.getpid()}"
    with ipcwire.connect(url) as ch:
        for bad in ("NOPE", 999):
            with pytest.raises(ConfigurationError) as info:
                ch.send(bad)
            _check(info.value, url)


def test_asyncio_names_the_endpoint_too() -> None:
    async def main() -> None:
        with pytest.raises(ConfigurationError) as info:
            await aio.listen("signal:NOPE")
        _check(info.value, "signal:NOPE")
        with pytest.raises(ConfigurationError) as info:
            agraceful_shutdown(signals=["NOPE"])
        _check(info.value, "signal:NOPE")
        url = f"signal:group:{os.getpgid(0)}"
        ch = await aio.connect(url)
        with pytest.raises(ConfigurationError) as info:
            await ch.send(999)
        _check(info.value, url)
        await ch.aclose()

    asyncio.run(main())
