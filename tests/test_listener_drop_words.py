"""The blocking and the asyncio listener say the same thing, at the same level, about a
client they drop in its handshake, naming it: "unix://... dropped pid 123, uid 0: it sent an
oversized handshake frame (not an ipcwire client?)" at INFO. The asyncio listener logged a
WARNING "refused or dropped a client" in the client side's words ("unix://... answered the
handshake with something that is not ipcwire"), naming nobody."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.options import ChannelOptions

OVERSIZED = "it sent an oversized handshake frame (not an ipcwire client?)"
HALF = "it closed the connection during the handshake"


def _bad_clients(path: str, url: str) -> None:
    """One client announcing a 1 GiB hello, one sending half a hello and its end: each reads
    until the listener drops it (after it has logged the drop)."""
    hello = ChannelOptions.build(parse_url(url), {}).client_handshake(goodbye=True).hello()
    for data in (struct.pack(">I", 1 << 30), hello[: len(hello) // 2]):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass


def _drops(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if "dropped" in r.getMessage()]


def _expected(url: str) -> list[tuple[int, str]]:
    who = f"pid {os.getpid()}, uid {os.getuid()}"
    return [(logging.INFO, f"{url} dropped {who}: {why}") for why in (OVERSIZED, HALF)]


def test_blocking(unix_url: Callable[[], str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    url = unix_url()
    with ipcwire.listen(url) as lst:
        _bad_clients(url.removeprefix("unix://"), url)
    assert _drops(caplog) == _expected(lst.url)


def test_asyncio(
    unix_url: Callable[[], str], aio_run: AioRun, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    url = unix_url()

    async def main() -> str:
        async with await aio.listen(url) as lst:
            await asyncio.to_thread(_bad_clients, url.removeprefix("unix://"), url)
            return lst.url

    listener_url = aio_run(main())
    assert _drops(caplog) == _expected(listener_url)
