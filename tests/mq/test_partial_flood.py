"""A hostile peer that starts a message in pieces at every priority and finishes none: the
receiver's memory stays bounded (an ipcwire sender has at most 2 x maxmsg + 1 messages under
way, one per piece still queued or read ahead, and the one it is sending), and recv() says
what the peer did instead of buffering each priority's first piece for ever."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import IpcwireError, RemoteProtocolError
from ipcwire.mq._proto import Reassembler
from ipcwire.mq.aio import AioMqChannel
from ipcwire.mq.blocking import MqChannel

MAXMSG = 4
PRIORITIES = 60  # far over 2 x MAXMSG + 1, far under the kernel's 32768


def _pair(url: str) -> tuple[MqChannel, MqChannel]:
    box: list[object] = []
    with ipcwire.listen(url) as lst:
        t = threading.Thread(target=lambda: box.append(ipcwire.connect(url, timeout=5)))
        t.start()
        server = lst.accept(timeout=5)
        t.join(10)
    [client] = box
    assert isinstance(server, MqChannel) and isinstance(client, MqChannel)
    return server, client


def _flood(client: MqChannel | AioMqChannel, stop: threading.Event) -> None:
    """The hostile end: the first full-size piece of a message at each priority, raw, on the
    channel's own queue (what any process holding it can write)."""
    out = client._out
    piece = b"A" * out.msgsize
    for prio in range(1, PRIORITIES + 1):
        while not stop.is_set():
            try:
                out.send(piece, priority=prio, timeout=0.05)
                break
            except IpcwireError:
                continue  # full: the receiver has stopped reading
        if stop.is_set():
            return


def test_blocking_receiver_refuses_a_partial_message_at_every_priority(
    mq_url: Callable[..., str],
) -> None:
    server, client = _pair(mq_url(f"maxmsg={MAXMSG}"))
    stop = threading.Event()
    flooder = threading.Thread(target=_flood, args=(client, stop))
    flooder.start()
    try:
        with pytest.raises(RemoteProtocolError, match="under way at once") as info:
            server.recv(timeout=10)
        assert server.url in str(info.value)
        assert server.statistics().buffered_bytes <= (2 * MAXMSG + 1) * client._out.msgsize
        stop.set()
        flooder.join(10)
        with pytest.raises(RemoteProtocolError):  # the channel stays out of step
            server.recv(timeout=0)
    finally:
        stop.set()
        flooder.join(10)
        server.close()
        client.close()


def test_asyncio_receiver_refuses_a_partial_message_at_every_priority(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url(f"maxmsg={MAXMSG}")
    stop = threading.Event()

    async def main() -> None:
        async with await aio.listen(url) as lst:
            connecting = asyncio.create_task(aio.connect(url, timeout=5))
            server = await lst.accept(timeout=5)
            client = await connecting
        assert isinstance(server, AioMqChannel) and isinstance(client, AioMqChannel)
        # the hostile end writes raw pieces from a thread onto the client's queue
        flooder = threading.Thread(target=_flood, args=(client, stop))
        flooder.start()
        try:
            with pytest.raises(RemoteProtocolError, match="under way at once"):
                await server.recv(timeout=10)
            assert server.statistics().buffered_bytes <= (2 * MAXMSG + 1) * client._out.msgsize
        finally:
            stop.set()
            await asyncio.to_thread(flooder.join, 10)
            await server.aclose()
            await client.aclose()

    asyncio.run(main())


def test_the_reassembler_takes_what_one_sender_can_have_under_way() -> None:
    r = Reassembler(msgsize=4, max_frame=100, url="mq:///t", max_partial=3)
    for prio in (1, 2, 3):  # three messages under way: allowed
        assert r.feed(b"abcd", prio) is None
    assert r.feed(b"ef", 2) == b"abcdef"  # one finishes
    assert r.feed(b"ghij", 4) is None  # so another may start
    with pytest.raises(RemoteProtocolError, match="under way at once"):
        r.feed(b"klmn", 5)
    assert r.buffered == 0  # what it held is let go
    with pytest.raises(RemoteProtocolError):
        r.feed(b"x", 1)
