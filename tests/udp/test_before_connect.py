"""A connected channel delivers only its peer's datagrams: one that another address sent to
the socket between its bind() and its connect() (the kernel filters only from the connect
on) is not taken for the peer's. The channel is built here on a socket in exactly the state
connect() leaves it in when that happens, with both APIs (the race itself: a probe that
floods the port given as bind=)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from tests._loops import AioRun

from ipcwire.errors import Timeout
from ipcwire.udp import aio as udp_aio
from ipcwire.udp._channel import options_for
from ipcwire.udp.blocking import UdpChannel


@pytest.fixture
def queued() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A bound socket holding a stranger's datagram, then connected to ``peer`` (returned)."""
    own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        own.bind(("127.0.0.1", 0))
        peer.bind(("127.0.0.1", 0))
        stranger.sendto(b"stranger", own.getsockname())  # loopback: queued at once
        own.connect(peer.getsockname())
    own.setblocking(False)
    with peer:
        yield own, peer


def _url(peer: socket.socket) -> str:
    return f"udp://127.0.0.1:{peer.getsockname()[1]}"


def test_blocking(queued: tuple[socket.socket, socket.socket]) -> None:
    own, peer = queued
    url = _url(peer)
    with UdpChannel(own, options_for(url, {}), url) as ch:
        with pytest.raises(Timeout):
            ch.recv(timeout=0)
        peer.sendto(b"peer", own.getsockname())
        assert ch.recv(timeout=5) == b"peer"
        peer.sendto(b"again", own.getsockname())
        assert ch.recv_from(timeout=5) == (b"again", peer.getsockname())


def test_asyncio(queued: tuple[socket.socket, socket.socket], aio_run: AioRun) -> None:
    own, peer = queued
    url = _url(peer)

    async def main() -> None:
        ch = udp_aio.AioUdpChannel(options_for(url, {}), url, own.family, peer.getsockname())
        await ch._open(own)
        async with ch:
            with pytest.raises(Timeout):
                await ch.recv(timeout=0)
            peer.sendto(b"peer", own.getsockname())
            assert await ch.recv(timeout=5) == b"peer"

    aio_run(main())
