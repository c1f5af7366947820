"""The asyncio D-Bus driver does what the blocking one does, against real daemons: an error
reply of the bus is the same exception."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ipcwire.dbus import aio as dbus_aio
from ipcwire.dbus import blocking
from ipcwire.dbus._proto import DbusError
from ipcwire.errors import ChannelBroken

DRIVERS = ["blocking", "asyncio"]
LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_error_reply_of_the_bus_is_a_dbus_error(
    driver: str, dbus_url: Callable[[], str]
) -> None:
    url = dbus_url()
    topic = "t" * 2000  # the daemon refuses match rules over 1024 bytes
    if driver == "blocking":
        with pytest.raises(DbusError) as err:
            blocking.subscribe(url, topic=topic, timeout=10)
    else:

        async def main() -> pytest.ExceptionInfo[DbusError]:
            with pytest.raises(DbusError) as err:
                await dbus_aio.subscribe(url, topic=topic, timeout=10)
            return err

        err = asyncio.run(main())
    assert isinstance(err.value, ChannelBroken)
    assert err.value.name == LIMITS_EXCEEDED and err.value.endpoint == url
    assert str(err.value).startswith(
        "org.freedesktop.DBus answered AddMatch with " + LIMITS_EXCEEDED
    )
