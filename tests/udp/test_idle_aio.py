"""A listener's silent peers end (``idle_timeout=``), asyncio API, on each event loop.

How the waits here end: tests/udp/_idle.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from tests._loops import AioRun
from tests.udp._idle import GAP, IDLE, SEND_IDLE, channels, idle_clock

from ipcwire import aio
from ipcwire.errors import EndOfChannel, Timeout


def test_asyncio_serve_leaves_no_task_per_client_that_came_and_went(aio_run: AioRun) -> None:
    async def echo(ch: Any) -> None:
        async for m in ch:
            await ch.send(m)

    async def main() -> Any:
        before = asyncio.all_tasks()
        lst = await aio.listen("udp://127.0.0.1:0", idle_timeout=IDLE)
        server = asyncio.create_task(lst.serve(echo))
        for i in range(50):
            async with await aio.connect(lst.url) as c:
                assert await c.request(b"%d" % i, timeout=10) == b"%d" % i
        peers = asyncio.all_tasks() - before - {server}
        assert peers  # still running: the idle time has not passed
        _, pending = await asyncio.wait(peers, timeout=30)
        assert not pending
        assert asyncio.all_tasks() - before == {server}
        assert channels(lst) == {}
        assert lst._users == 1  # type: ignore[attr-defined]
        lst.close()
        await asyncio.wait_for(server, 10)
        assert lst._transport.is_closing()  # type: ignore[attr-defined]
        return lst._sock  # type: ignore[attr-defined]

    assert aio_run(main()).fileno() == -1


def test_asyncio_a_silent_peer_ends_and_comes_back_through_accept(aio_run: AioRun) -> None:
    async def main() -> None:
        async with (
            await aio.listen("udp://127.0.0.1:0", idle_timeout=IDLE) as lst,
            await aio.connect(lst.url) as c,
        ):
            await c.send(b"1")
            ch = await lst.accept(timeout=5)
            assert await ch.recv(timeout=5) == b"1"
            with pytest.raises(EndOfChannel) as info:
                await ch.recv()
            text = str(info.value)
            assert ch.url in text and "(idle_timeout=0.2)" in text and "accept()" in text
            with pytest.raises(EndOfChannel):
                await ch.recv(timeout=0)
            assert [m async for m in ch] == []
            assert channels(lst) == {}
            await ch.send(b"late reply")
            assert await c.recv(timeout=5) == b"late reply"
            await c.send(b"2")
            again = await lst.accept(timeout=5)
            assert again is not ch and again.peer == ch.peer
            assert await again.recv(timeout=5) == b"2"
            await ch.aclose()
            await again.aclose()

    aio_run(main())


def test_asyncio_queued_messages_and_short_timeouts(aio_run: AioRun) -> None:
    async def main() -> None:
        async with (
            await aio.listen("udp://127.0.0.1:0", idle_timeout=IDLE) as lst,
            await aio.connect(lst.url) as a,
            await aio.connect(lst.url) as b,
        ):
            for m in (b"1", b"2", b"3"):
                await a.send(m)
            ch_a = await lst.accept(timeout=5)
            await b.send(b"b")
            ch_b = await lst.accept(timeout=5)
            assert await ch_b.recv(timeout=5) == b"b"
            with pytest.raises(EndOfChannel):
                await ch_b.recv(timeout=30)
            assert [await ch_a.recv(timeout=0) for _ in range(3)] == [b"1", b"2", b"3"]
            with pytest.raises(EndOfChannel):
                await ch_a.recv(timeout=0)
            await ch_a.aclose()
            await ch_b.aclose()
        async with (
            await aio.listen("udp://127.0.0.1:0", idle_timeout=1.0) as lst,
            await aio.connect(lst.url) as c,
        ):
            await c.send(b"1")
            ch = await lst.accept(timeout=5)
            assert await ch.recv(timeout=5) == b"1"
            with pytest.raises(Timeout):
                await ch.recv(timeout=0.05)
            with pytest.raises(Timeout):
                await ch.recv(timeout=0)
            with pytest.raises(EndOfChannel):
                await ch.recv(timeout=30)
            await ch.aclose()

    aio_run(main())


def test_asyncio_a_datagram_not_read_yet_is_read_before_the_peer_is_found_idle(
    aio_run: AioRun,
) -> None:
    """The event loop had not read the peer's datagram (it was kept busy past the idle time):
    the recv reads it instead of ending the channel and handing it to a new one."""

    async def main() -> None:
        async with (
            await aio.listen("udp://127.0.0.1:0", idle_timeout=IDLE) as lst,
            await aio.connect(lst.url) as c,
        ):
            await c.send(b"1")
            ch = await lst.accept(timeout=5)
            assert await ch.recv(timeout=5) == b"1"
            await c.send(b"2")  # no loop turn from here to the recv: not read yet
            idle_clock()  # blocks the loop past the idle time
            assert await ch.recv(timeout=0) == b"2"
            with pytest.raises(EndOfChannel):
                await ch.recv(timeout=30)
            await ch.aclose()

    aio_run(main())


def test_asyncio_a_send_while_a_recv_waits_puts_its_end_off(aio_run: AioRun) -> None:
    async def main() -> None:
        async with (
            await aio.listen("udp://127.0.0.1:0", idle_timeout=SEND_IDLE) as lst,
            await aio.connect(lst.url) as c,
            await aio.listen("udp://127.0.0.1:0", idle_timeout=SEND_IDLE) as clock,
            await aio.connect(clock.url) as tick,
        ):
            await c.send(b"1")
            ch = await lst.accept(timeout=5)
            assert await ch.recv(timeout=5) == b"1"
            waiting = asyncio.create_task(ch.recv())
            while ch._q.waiter is None:  # type: ignore[attr-defined]
                await asyncio.sleep(0)  # let the task start waiting (no time passes)
            with pytest.raises(Timeout):
                await c.recv(timeout=GAP)
            await tick.send(b"t")
            ticker = await clock.accept(timeout=5)
            assert await ticker.recv(timeout=5) == b"t"
            with pytest.raises(Timeout):
                await c.recv(timeout=GAP)
            await ch.send(b"ping")  # activity while the recv waits
            with pytest.raises(EndOfChannel):
                await ticker.recv(timeout=30)  # ch's first idle end has passed
            assert not waiting.done()
            with pytest.raises(EndOfChannel):
                await asyncio.wait_for(waiting, 30)
            assert await c.recv(timeout=5) == b"ping"
            await ticker.aclose()
            await ch.aclose()

    aio_run(main())


def test_asyncio_datagrams_from_the_peer_keep_it(aio_run: AioRun) -> None:
    idle = 0.5

    async def main() -> None:
        async with (
            await aio.listen("udp://127.0.0.1:0", idle_timeout=idle) as lst,
            await aio.connect(lst.url) as c,
        ):
            await c.send(b"0")
            ch = await lst.accept(timeout=5)
            assert await ch.recv(timeout=5) == b"0"
            start = time.monotonic()
            n = 1
            while time.monotonic() - start < 2 * idle:
                with pytest.raises(Timeout):
                    await c.recv(timeout=0.1)  # spaces the datagrams
                await c.send(b"%d" % n)
                assert await ch.recv(timeout=5) == b"%d" % n
                n += 1
            with pytest.raises(Timeout):
                await ch.recv(timeout=0.05)  # the last datagram came just now
            assert channels(lst)[ch.addr] is ch  # type: ignore[attr-defined]
            await ch.aclose()

    aio_run(main())


def test_asyncio_sending_keeps_a_peer_and_only_a_recv_ends_it(aio_run: AioRun) -> None:
    idle = 0.5

    async def main() -> None:
        async with (
            await aio.listen("udp://127.0.0.1:0", idle_timeout=idle) as lst,
            await aio.connect(lst.url) as c,
            await aio.connect(lst.url) as other,
        ):
            await c.send(b"hello")
            ch = await lst.accept(timeout=5)
            assert await ch.recv(timeout=5) == b"hello"
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < 2 * idle:
                with pytest.raises(Timeout):
                    await ch.recv(timeout=0.1)
                await ch.send(b"%d" % n)
                n += 1
            assert [await c.recv(timeout=5) for _ in range(n)] == [b"%d" % i for i in range(n)]
            await other.send(b"x")
            clock = await lst.accept(timeout=5)
            assert await clock.recv(timeout=5) == b"x"
            with pytest.raises(EndOfChannel):
                await clock.recv(timeout=30)
            assert channels(lst)[ch.addr] is ch  # type: ignore[attr-defined]
            await c.send(b"still mine")
            assert await ch.recv(timeout=5) == b"still mine"
            await ch.aclose()
            await clock.aclose()

    aio_run(main())


def test_asyncio_socket_counting_with_ended_channels(aio_run: AioRun) -> None:
    async def ended(lst: Any, c: Any, msg: bytes) -> Any:
        await c.send(msg)
        ch = await lst.accept(timeout=5)
        assert await ch.recv(timeout=5) == msg
        with pytest.raises(EndOfChannel):
            await ch.recv(timeout=30)
        return ch

    async def main() -> list[Any]:
        # the listener closes first, then the ended channel: the socket closes then
        first = await aio.listen("udp://127.0.0.1:0", idle_timeout=IDLE)
        async with await aio.connect(first.url) as c:
            ch = await ended(first, c, b"1")
            first.close()
            assert not first._transport.is_closing()  # type: ignore[attr-defined]
            await ch.send(b"reply")
            assert await c.recv(timeout=5) == b"reply"
            await ch.aclose()
            assert first._transport.is_closing()  # type: ignore[attr-defined]
        # an ended channel closed after a new peer at its address: that one goes on
        second = await aio.listen("udp://127.0.0.1:0", idle_timeout=IDLE)
        async with await aio.connect(second.url) as c:
            old = await ended(second, c, b"1")
            await c.send(b"2")
            new = await second.accept(timeout=5)
            assert await new.recv(timeout=5) == b"2"
            await old.aclose()
            assert list(channels(second).values()) == [new]
            await c.send(b"3")
            assert await new.recv(timeout=5) == b"3"
            second.close()
            assert not second._transport.is_closing()  # type: ignore[attr-defined]
            await new.send(b"r")
            assert await c.recv(timeout=5) == b"r"
            await new.aclose()
            assert second._transport.is_closing()  # type: ignore[attr-defined]
        return [first._sock, second._sock]  # type: ignore[attr-defined]

    assert [s.fileno() for s in aio_run(main())] == [-1, -1]
