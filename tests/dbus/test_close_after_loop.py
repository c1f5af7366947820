"""close() of an asyncio dbus channel or listener after its loop ended (see
tests/test_close_after_loop.py): it raised RuntimeError and left the bus connection open.
Without the loop nothing more can be written, not even the channel's Close: the connection
hangs up, and the peer's channel ends as a vanished peer's (ChannelBroken)."""

from __future__ import annotations

from collections.abc import Callable

from tests._loops import AioRun
from tests.test_close_after_loop import client_closed_after_its_loop, listener_closed_after_its_loop

from ipcwire.errors import ChannelBroken


def test_an_asyncio_client_closed_after_its_loop_ended(
    dbus_url: Callable[[], str], aio_run: AioRun
) -> None:
    client_closed_after_its_loop(dbus_url(), aio_run, end=ChannelBroken)


def test_an_asyncio_listener_and_its_channel_closed_after_their_loop_ended(
    dbus_url: Callable[[], str], aio_run: AioRun
) -> None:
    listener_closed_after_its_loop(dbus_url(), aio_run, end=ChannelBroken)
