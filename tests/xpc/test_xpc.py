"""macOS XPC is registered, described, and refused with a clear message here. Nothing runs
XPC on this machine (it needs macOS); the driver modules are checked directly."""

from __future__ import annotations

import asyncio
import sys

import pytest

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.errors import MechanismUnavailable
from ipcwire.options import ChannelOptions
from ipcwire.xpc import SPEC, UNAVAILABLE
from ipcwire.xpc import aio as xpc_aio
from ipcwire.xpc import blocking as xpc_blocking


def test_registered_with_its_capabilities() -> None:
    spec = ipcwire.lookup("xpc")
    assert spec is SPEC
    assert spec.capabilities.platforms == ("darwin",)
    assert spec.capabilities.peer_credentials and spec.capabilities.needs_daemon
    assert spec in ipcwire.mechanisms()


@pytest.mark.skipif(sys.platform == "darwin", reason="the platform refusal is for non-macOS")
def test_refused_by_platform_here() -> None:
    reason = SPEC.unavailable_reason()
    assert reason is not None and "exists only on darwin" in reason
    assert "no XPC driver yet" in reason and "works on darwin" not in reason
    for call in (
        lambda: ipcwire.connect("xpc:com.example.helper"),
        lambda: ipcwire.listen("xpc:com.example.helper"),
    ):
        with pytest.raises(MechanismUnavailable, match="no XPC driver yet"):
            call()
    with pytest.raises(MechanismUnavailable, match="no XPC driver yet"):
        asyncio.run(aio.connect("xpc:com.example.helper"))


def test_the_drivers_say_there_is_no_xpc_driver_yet() -> None:
    endpoint = parse_url("xpc:com.example.helper")
    options = ChannelOptions.build(endpoint, {})
    with pytest.raises(MechanismUnavailable, match="unix://") as err:
        xpc_blocking.connect(endpoint, options)
    assert UNAVAILABLE in str(err.value)
    with pytest.raises(MechanismUnavailable):
        xpc_blocking.listen(endpoint, options)
    with pytest.raises(MechanismUnavailable):
        asyncio.run(xpc_aio.connect(endpoint, options))
    with pytest.raises(MechanismUnavailable):
        asyncio.run(xpc_aio.listen(endpoint, options))
