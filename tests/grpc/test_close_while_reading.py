"""A gRPC client closed while another thread (task) waits in its recv(), and a cancelled
asyncio recv(), on a real listener.

Before: the client's recv() without timeout= waited inside grpcio's read, which only the end
of the call can wake, so close() waited 1 s and then cancelled the call: the waiting reader
got ChannelClosed, but every message sent before close() that the server had not read yet
was lost (the server's recv() raised ChannelBroken "the client ... went away"). And cancelling
an asyncio recv() (asyncio.wait_for(ch.recv(), 0.1)) cancelled grpc.aio's read, and with it
the whole RPC: the channel was broken on both sides. Now the waiting reader wakes with
ChannelClosed at once, the server gets every message and then EndOfChannel, and a cancelled
recv() leaves the channel as it was, as on unix, tcp, shm and ws.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelClosed, EndOfChannel

BOUND = 10.0
N = 5


def _wait_reading(ch: ipcwire.Channel) -> None:
    """Until a thread is inside ``ch.recv()`` (a bounded poll: nothing to wait on)."""
    deadline = time.monotonic() + BOUND
    while not ch._reading.locked():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_blocking_close_wakes_a_waiting_reader_and_delivers_what_was_sent() -> None:
    with ipcwire.listen("grpc://127.0.0.1:0", codec="json") as srv:
        c = ipcwire.connect(srv.url, codec="json", timeout=BOUND)
        p = srv.accept(timeout=BOUND)
        for i in range(N):
            c.send({"i": i})
        woke: list[BaseException] = []

        def reader() -> None:
            try:
                c.recv()
            except BaseException as exc:
                woke.append(exc)

        th = threading.Thread(target=reader)
        th.start()
        _wait_reading(c)
        start = time.monotonic()
        c.close()
        th.join(BOUND)
        took = time.monotonic() - start
        assert not th.is_alive()
        assert isinstance(woke[0], ChannelClosed), woke
        assert took < 0.5, took  # (1.0 s before: close() waited, then cancelled the call)
        got = [p.recv(timeout=BOUND) for _ in range(N)]
        assert got == [{"i": i} for i in range(N)]
        with pytest.raises(EndOfChannel):
            p.recv(timeout=BOUND)
        p.close()


def test_asyncio_close_wakes_a_waiting_reader_and_delivers_what_was_sent() -> None:
    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0", codec="json") as srv:
            c = await aio.connect(srv.url, codec="json", timeout=BOUND)
            p = await srv.accept(timeout=BOUND)
            for i in range(N):
                await c.send({"i": i})
            reading = asyncio.create_task(c.recv())
            for _ in range(5):  # the task runs up to its wait for a message
                await asyncio.sleep(0)
            assert not reading.done()
            start = time.monotonic()
            await c.aclose()
            with pytest.raises(ChannelClosed):
                await asyncio.wait_for(reading, BOUND)
            assert time.monotonic() - start < 0.5
            got = [await p.recv(timeout=BOUND) for _ in range(N)]
            assert got == [{"i": i} for i in range(N)]
            with pytest.raises(EndOfChannel):
                await p.recv(timeout=BOUND)
            await p.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("side", ["client", "server"])
def test_asyncio_cancelled_recv_leaves_the_channel_fine(side: str) -> None:
    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0", codec="json") as srv:
            c = await aio.connect(srv.url, codec="json", timeout=BOUND)
            p = await srv.accept(timeout=BOUND)
            me, peer = (c, p) if side == "client" else (p, c)
            for i in range(3):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(me.recv(), 0.05)  # nothing comes: cancelled
                await peer.send({"i": i})
                assert await me.recv(timeout=BOUND) == {"i": i}
            await me.send("back")
            assert await peer.recv(timeout=BOUND) == "back"
            await c.aclose()
            await p.aclose()

    asyncio.run(main())
