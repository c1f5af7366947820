"""recv(timeout=0) with nothing there says "no message from URL yet", as unix:// and tcp://
do, on udp (connected, a listener's peer, unbound), ws, http clients and sse+http clients,
blocking and asyncio; a timeout over 0 still says "within N s"."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout
from ipcwire.udp.aio import bind as aio_bind
from ipcwire.udp.blocking import bind

URLS = [
    "udp://127.0.0.1:0",
    "ws://127.0.0.1:0/t",
    "http://127.0.0.1:0/t",
    "sse+http://127.0.0.1:0/t",
]


def _says(ch: Any, timeout: float) -> str:
    with pytest.raises(Timeout) as info:
        ch.recv(timeout=timeout)
    return str(info.value)


async def _asays(ch: Any, timeout: float) -> str:
    with pytest.raises(Timeout) as info:
        await ch.recv(timeout=timeout)
    return str(info.value)


def _check(said: dict[float, str], url: str) -> None:
    assert said[0].startswith("no ") and said[0].endswith(" yet"), said[0]
    assert url.split("//", maxsplit=1)[0] in said[0]
    assert said[0.0] == said[0]
    assert said[0.05].endswith(" within 0.05 s"), said[0.05]


@pytest.mark.parametrize("url", URLS)
def test_blocking(url: str) -> None:
    with ipcwire.listen(url) as server, ipcwire.connect(server.url, timeout=5) as client:
        ends = [client]
        if not url.startswith("sse"):  # (an sse server channel only sends)
            client.send(b"hello", timeout=5)
            with server.accept(timeout=5) as peer:
                assert peer.recv(timeout=5) == b"hello"
                if not url.startswith("http"):  # (http's server channel: not this fix's)
                    ends.append(peer)
                for ch in ends:
                    _check({t: _says(ch, t) for t in (0, 0.0, 0.05)}, url)
        else:
            _check({t: _says(client, t) for t in (0, 0.0, 0.05)}, url)
    with bind() as unbound:
        _check({t: _says(unbound, t) for t in (0, 0.0, 0.05)}, "udp://")


@pytest.mark.parametrize("url", URLS)
def test_asyncio(url: str) -> None:
    async def main() -> None:
        async with await aio.listen(url) as server, await aio.connect(server.url, timeout=5) as c:
            ends = [c]
            if not url.startswith("sse"):
                await c.send(b"hello", timeout=5)
                peer = await server.accept(timeout=5)
                assert await peer.recv(timeout=5) == b"hello"
                ends.append(peer)
            for ch in ends:
                _check({t: await _asays(ch, t) for t in (0, 0.0, 0.05)}, url)
            for ch in ends[1:]:
                await ch.aclose()
        unbound = await aio_bind()
        try:
            _check({t: await _asays(unbound, t) for t in (0, 0.0, 0.05)}, "udp://")
        finally:
            await unbound.aclose()

    asyncio.run(main())
