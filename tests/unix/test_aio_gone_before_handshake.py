"""An asyncio unix listener drops a client that was gone before its handshake completed, as
the blocking listener does, instead of handing it to accept(). helper-87's server at its
descriptor limit accepted, once descriptors were free, clients that had already timed out and
closed: it ran the handler for each, which logged a WARNING 'broke while receiving ... broken
pipe' (129 of them); the blocking listener's welcome failed with EPIPE and it dropped them
(INFO). Here a client sends its hello and closes before the listener reads it."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import pytest
from tests._loops import AioRun

from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.options import ChannelOptions


def test_a_client_gone_before_its_welcome_is_not_accepted(
    unix_url: Callable[[], str], aio_run: AioRun, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    url = unix_url()

    async def main() -> object:
        async with await aio.listen(url) as server:
            # before the loop runs again: connected (kernel backlog), hello sent, closed
            gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            gone.connect(url.removeprefix("unix://"))
            gone.sendall(
                ChannelOptions.build(parse_url(url), {}).client_handshake(goodbye=True).hello()
            )
            gone.close()
            async with await aio.connect(url, timeout=10) as client:
                await client.send(b"from the live client")
                ch = await server.accept(timeout=10)  # the live one: the gone one was dropped
                async with ch:
                    return await ch.recv(timeout=10)

    assert aio_run(main()) == b"from the live client"
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warned, warned
    assert any("gone before its handshake completed" in r.getMessage() for r in caplog.records)
