"""``recv(timeout=0)`` on the asyncio API is "what is there now", including a datagram the
kernel holds that the event loop has not read yet (as on the blocking API): a listener's
peer channel and a bound channel, on each event loop."""

from __future__ import annotations

import socket

import pytest
from tests._loops import AioRun

from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.errors import ConnectionRefused, Timeout
from ipcwire.udp import aio as udp_aio
from ipcwire.udp._channel import options_for


def test_a_listener_peer_reads_a_datagram_the_loop_has_not_read(aio_run: AioRun) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            lst = await udp_aio.listen(parse_url("udp://127.0.0.1:0"), options_for("udp:", {}))
            async with lst:
                s.sendto(b"1", lst.local_address)
                ch = await lst.accept(timeout=5)
                assert await ch.recv(timeout=0) == b"1"
                with pytest.raises(Timeout):
                    await ch.recv(timeout=0)
                s.sendto(b"2", lst.local_address)  # loopback: in the socket now; no await
                assert await ch.recv(timeout=0) == b"2"
                with pytest.raises(Timeout):
                    await ch.recv(timeout=0)
                await ch.aclose()

    aio_run(main())


def test_a_bound_channel_reads_a_datagram_the_loop_has_not_read(aio_run: AioRun) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            async with await udp_aio.bind() as inbox:
                with pytest.raises(Timeout):
                    await inbox.recv(timeout=0)
                s.sendto(b"x", inbox.local_address)
                assert await inbox.recv_from(timeout=0) == (b"x", s.getsockname())
                with pytest.raises(Timeout):
                    await inbox.recv(timeout=0)

    aio_run(main())


def test_a_connected_channel_sees_a_refusal_the_loop_has_not_read(aio_run: AioRun) -> None:
    """The ICMP error for a datagram sent to a closed port is there at once too."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind(("127.0.0.1", 0))
            url = f"udp://127.0.0.1:{gone.getsockname()[1]}"
        async with await aio.connect(url) as ch:
            ch._send(ch.url, b"hello", None)  # type: ignore[attr-defined]  # no await
            with pytest.raises(ConnectionRefused):
                await ch.recv(timeout=0)

    aio_run(main())
