"""Pickle over mq only over queues nobody else may open. A queue does not tell one writer
from another, and the token authenticates only the handshake: a client that connected with
mode=0o660 made a pair a group member could open and put pickles into after the handshake
(the .up queue into the listener, the .dn queue into the client). Now connect() refuses
pickle with a mode open to others, before it makes anything, and a listener refuses a pickle
client whose pair is open to others (an earlier ipcwire, say), telling it why."""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Callable
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.errors import ConfigurationError, PermissionDenied
from ipcwire.mq._client import ClientSession
from ipcwire.mq.blocking import MessageQueue
from ipcwire.options import ChannelOptions

WHY = "does not tell one writer from another"
OPTS: dict[str, Any] = {"codec": "pickle", "token": "real-secret"}


def test_connect_refuses_pickle_with_a_mode_open_to_others(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    with ipcwire.listen(url, **OPTS):
        with pytest.raises(ConfigurationError, match=WHY) as info:
            ipcwire.connect(url, mode=0o660, timeout=5, **OPTS)
        assert "mode=0o660" in str(info.value) and "mode=0o600" in str(info.value)

        async def main() -> None:
            with pytest.raises(ConfigurationError, match=WHY):
                await aio.connect(url, mode=0o606, timeout=5, **OPTS)

        asyncio.run(main())
        with ipcwire.connect(url, timeout=5, **OPTS) as ch:  # the default 0600: fine
            ch.send({1, 2})
        # msgpack over a shared pair is fine: nothing it decodes runs code
        with ipcwire.listen(mq_url(), codec="msgpack", token="t") as lst:
            ipcwire.connect(lst.url, codec="msgpack", token="t", mode=0o660, timeout=5).close()


def test_listener_refuses_a_pickle_client_whose_pair_is_open_to_others(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url()
    with ipcwire.listen(url, **OPTS):
        name = url[len("mq://") :]
        options = ChannelOptions.build(parse_url(url), dict(OPTS))
        # a client that made its pair 0600 and then opened it to the group (as a client
        # without this check, connecting with mode=0o660, did)
        session = ClientSession(name, options, maxmsg=None, msgsize=None, mode=0o600)
        try:
            os.fchmod(session.up.fileno(), 0o660)
            with MessageQueue.open(name, read=False) as rendezvous:
                assert rendezvous.try_send(session.hello(), 0)
            deadline = time.monotonic() + 10
            while (got := session.dn.try_recv()) is None:  # the listener answers at once
                assert time.monotonic() < deadline, "the listener never answered"
                session.dn._wait(select.POLLIN, deadline, "receiving from")
            with pytest.raises(PermissionDenied, match=WHY) as info:
                session.feed(*got)
            assert "the client's queues are mode 0o660" in str(info.value)
        finally:
            session.abort()
