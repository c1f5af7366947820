"""The public conformance suite against D-Bus channels, on a private session bus."""

from __future__ import annotations

from collections.abc import Callable

from tests._loops import AioRun

from ipcwire.dbus import SPEC
from ipcwire.testing import acheck_channel, apair_from_url, check_channel, pair_from_url


def test_blocking_conformance(dbus_url: Callable[[], str]) -> None:
    check_channel(pair_from_url(dbus_url), SPEC.capabilities, url=dbus_url)


def test_asyncio_conformance(dbus_url: Callable[[], str], aio_run: AioRun) -> None:
    aio_run(acheck_channel(apair_from_url(dbus_url), SPEC.capabilities, url=dbus_url))
