"""The channel classes whose members a mechanism's page uses are public, and typed so that a
``mypy --strict`` program (this file, which the project's mypy run checks) uses them after an
``isinstance`` narrow, as shm.md shows for shared memory. Before, ``MqListener.accept()`` was
typed ``-> Channel`` (so ``priority=`` on the server's channel failed type checking), and
``MqChannel``, ``DbusListener``, ``SseClientChannel``, ``AioUdpChannel`` and the others could
only be imported from the drivers' modules (``ipcwire.mq`` had none of them)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import ipcwire
import ipcwire.dbus
import ipcwire.sse
import ipcwire.udp
from ipcwire import aio
from ipcwire.mq import AioMqChannel, AioMqListener, MqChannel, MqListener


def test_mq_channels_type_check_after_a_narrow(mq_url: Callable[..., str]) -> None:
    with ipcwire.listen(mq_url(), codec="json") as lst:
        assert isinstance(lst, MqListener)
        with ipcwire.connect(lst.url, codec="json", timeout=5) as ch:
            assert isinstance(ch, MqChannel)  # the narrow mq.md shows
            with lst.accept(timeout=5) as server_side:  # typed MqChannel: no narrow needed
                ch.send({"n": 1}, priority=1, timeout=5)
                ch.send({"n": 2}, priority=7, timeout=5)
                assert server_side.recv_with_priority(timeout=5) == ({"n": 2}, 7)
                assert server_side.recv_with_priority(timeout=5) == ({"n": 1}, 1)
                server_side.send("done", priority=3, timeout=5)
                assert ch.recv(timeout=5) == "done"


def test_asyncio_mq_channels_type_check(mq_url: Callable[..., str]) -> None:
    async def main() -> None:
        lst = await aio.listen(mq_url())
        try:
            assert isinstance(lst, AioMqListener)
            ch = await aio.connect(lst.url, timeout=5)
            assert isinstance(ch, AioMqChannel)
            server_side = await lst.accept(timeout=5)  # typed AioMqChannel
            await ch.send(b"hi", priority=4, timeout=5)
            assert await server_side.recv_with_priority(timeout=5) == (b"hi", 4)
            await ch.aclose()
            await server_side.aclose()
        finally:
            await lst.aclose()

    asyncio.run(main())


def test_the_other_pages_classes_are_public() -> None:
    """dbus.md (publish), sse.md (last_event_id) and udp.md (recv_from/send_to) narrow to
    these: each is the driver's class, imported only when asked for (the registry imports
    the mechanism's package; D-Bus and aiohttp stay unloaded until then)."""
    from ipcwire.dbus import AioDbusListener, DbusListener
    from ipcwire.sse import AioSseClientChannel, SseClientChannel
    from ipcwire.udp import AioUdpChannel, UdpChannel

    assert DbusListener is sys.modules["ipcwire.dbus.blocking"].DbusListener
    assert AioDbusListener is sys.modules["ipcwire.dbus.aio"].AioDbusListener
    assert SseClientChannel is sys.modules["ipcwire.sse.blocking"].SseClientChannel
    assert AioSseClientChannel is sys.modules["ipcwire.sse.aio"].AioSseClientChannel
    assert AioUdpChannel is sys.modules["ipcwire.udp.aio"].AioUdpChannel
    for module in (ipcwire.dbus, ipcwire.sse, ipcwire.udp):
        assert set(module.__all__) <= set(dir(module)) | set(module._CLASSES)
    with ipcwire.udp.bind("udp://127.0.0.1:0") as u:
        assert isinstance(u, UdpChannel)
        u.send_to(b"x", u.url, timeout=5)
        assert u.recv_from(timeout=5)[0] == b"x"


def _typed_only(url: str) -> None:  # (checked by mypy, never run)
    server = ipcwire.listen(url)
    assert isinstance(server, ipcwire.dbus.DbusListener)
    server.publish({"status": "idle"}, topic="status")
    feed = ipcwire.connect(url)
    assert isinstance(feed, ipcwire.sse.SseClientChannel)
    print(feed.last_event_id.upper())


async def _atyped_only(url: str) -> None:  # (checked by mypy, never run)
    server = await aio.listen(url)
    assert isinstance(server, ipcwire.dbus.AioDbusListener)
    await server.publish({"status": "idle"}, topic="status")
    feed = await aio.connect(url)
    assert isinstance(feed, ipcwire.sse.AioSseClientChannel)
    print(feed.last_event_id.upper())
    u = await aio.connect(url)
    assert isinstance(u, ipcwire.udp.AioUdpChannel)
    await u.send_to(b"x", ("127.0.0.1", 9))
