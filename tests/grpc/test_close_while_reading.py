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
from tests._proc import wait_until

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelClosed, EndOfChannel

BOUND = 10.0
N = 5


def _wait_reading(ch: ipcwire.Channel) -> None:
    """Until a thread is inside ``ch.recv()`` (a bounded poll: nothing to wait on)."""
    assert wait_until(ch._reading.locked, BOUND)  # type: ignore[attr-defined]


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
        assert took < BOUND / 2, took  # (close() waited, then cancelled the call, before)
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
            assert time.monotonic() - start < BOUND / 2
            got = [await p.recv(timeout=BOUND) for _ in range(N)]
            assert got == [{"i": i} for i in range(N)]
            with pytest.raises(EndOfChannel):
                await p.recv(timeout=BOUND)
            await p.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("how", ["cancelled", "timeout="])
@pytest.mark.parametrize("side", ["client", "server"])
def test_asyncio_cancelled_recv_leaves_the_channel_fine(side: str, how: str) -> None:
    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0", codec="json") as srv:
            c = await aio.connect(srv.url, codec="json", timeout=BOUND)
            p = await srv.accept(timeout=BOUND)
            me, peer = (c, p) if side == "client" else (p, c)
            for i in range(3):
                with pytest.raises(TimeoutError):  # nothing comes
                    if how == "cancelled":
                        await asyncio.wait_for(me.recv(), 0.05)
                    else:
                        await me.recv(timeout=0.05)
                await peer.send({"i": i})
                assert await me.recv(timeout=BOUND) == {"i": i}
            await me.send("back")
            assert await peer.recv(timeout=BOUND) == "back"
            await c.aclose()
            await p.aclose()

    asyncio.run(main())


def test_asyncio_round_trips_read_in_the_receiving_task() -> None:
    """recv() reads grpc's message in its own task (no reader task between: one pass of the
    event loop less per message, the round trip #7 measures), until a recv is cancelled."""

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0", codec="json") as srv:
            c = await aio.connect(srv.url, codec="json", timeout=BOUND)
            p = await srv.accept(timeout=BOUND)
            for i in range(20):
                await c.send(i)
                await p.send(await p.recv(timeout=BOUND))
                assert await c.recv(timeout=BOUND) == i
            assert c._reader is None and p._reader is None  # type: ignore[attr-defined]
            with pytest.raises(TimeoutError):
                await c.recv(timeout=0.01)
            assert c._reader is not None  # type: ignore[attr-defined]  # the read goes on
            await p.send("after")
            assert await c.recv(timeout=BOUND) == "after"
            await c.aclose()
            await p.aclose()

    asyncio.run(main())
