"""Threads (or tasks) calling ``request()`` on one channel at once each get their own reply.

``request()`` is "send, then take the next message"; two threads doing it at once on one
channel took each other's replies: a probe (4 threads x 300 requests to an echo server on
one channel) got 800 to 1150 wrong replies out of 1200 on unix, tcp, ws, grpc, shm and mq
(http alone paired them, one POST each). An orchestrator sharing a connection among its
threads got other threads' answers, silently. Requests on one channel now take turns (the
conformance suite checks every mechanism); a request that cannot get its turn in time is
not sent and leaves the channel open.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from tests._proc import run_python

import ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout


def test_a_request_that_gets_no_turn_in_time_is_not_sent(tmp_path: Path) -> None:
    release, arrived = threading.Event(), threading.Event()
    seen: list[bytes] = []

    def slow_echo(ch: ipcwire.Channel) -> None:
        for m in ch:
            seen.append(m)
            arrived.set()
            if m == b"slow":
                release.wait(30)
            ch.send(m)

    with ipcwire.listen(f"unix://{tmp_path}/s.sock") as lst:
        threading.Thread(target=lst.serve, args=(slow_echo,), daemon=True).start()
        with ipcwire.connect(lst.url, timeout=10) as ch:
            replies: list[bytes] = []
            first = threading.Thread(target=lambda: replies.append(ch.request(b"slow")))
            first.start()
            assert arrived.wait(10)  # the first request is in the server: its turn is held
            with pytest.raises(Timeout, match="not sent: other threads' requests"):
                ch.request(b"second", timeout=0.2)
            assert not ch.closed  # nothing was sent: the channel goes on
            release.set()
            first.join(10)
            assert replies == [b"slow"]
            assert ch.request(b"third", timeout=10) == b"third"
            assert seen == [b"slow", b"third"]


def test_asyncio_a_request_that_gets_no_turn_in_time_is_not_sent(tmp_path: Path) -> None:
    async def main() -> None:
        release = asyncio.Event()
        seen: list[bytes] = []
        arrived = asyncio.Event()

        async def slow_echo(ch: ipcwire.aio.AioChannel) -> None:
            async for m in ch:
                seen.append(m)
                arrived.set()
                if m == b"slow":
                    await release.wait()
                await ch.send(m)

        async with await aio.listen(f"unix://{tmp_path}/s.sock") as lst:
            serving = asyncio.ensure_future(lst.serve(slow_echo))
            ch = await aio.connect(lst.url, timeout=10)
            first = asyncio.ensure_future(ch.request(b"slow"))
            await arrived.wait()
            with pytest.raises(Timeout, match="not sent: other tasks' requests"):
                await ch.request(b"second", timeout=0.2)
            assert not ch.closed
            release.set()
            assert await first == b"slow"
            assert await ch.request(b"third", timeout=10) == b"third"
            assert seen == [b"slow", b"third"]
            await ch.aclose()
            serving.cancel()

    asyncio.run(main())


def test_asyncio_a_cancelled_request_closes_the_channel(tmp_path: Path) -> None:
    """``asyncio.wait_for(ch.request(...), t)`` cancels the request when ``t`` runs out; the
    reply came later and the next request returned it as its own (every mechanism). A
    cancelled request now closes the channel, as ``timeout=`` running out does."""

    async def main() -> None:
        answer = asyncio.Event()  # the server answers once the request was given up

        async def slow_echo(ch: ipcwire.aio.AioChannel) -> None:
            async for m in ch:
                if m == b"slow":
                    await answer.wait()
                await ch.send(m)

        async with await aio.listen(f"unix://{tmp_path}/s.sock") as lst:
            serving = asyncio.ensure_future(lst.serve(slow_echo))
            ch = await aio.connect(lst.url, timeout=10)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ch.request(b"slow"), 0.05)
            answer.set()  # (the late reply: before, the next request took it)
            assert ch.closed  # before: open, and the next request got b"slow"
            with pytest.raises(ipcwire.ChannelClosed):
                await ch.request(b"second", timeout=5)
            serving.cancel()

    asyncio.run(main())


def test_a_request_interrupted_by_ctrl_c_closes_the_channel(tmp_path: Path) -> None:
    """KeyboardInterrupt while a blocking request waits for its reply: the reply could come
    later and answer the next request (a REPL user pressing Ctrl-C and trying again)."""
    out = run_python(
        f"""
import os, signal, threading, ipcwire
lst = ipcwire.listen("unix://{tmp_path}/c.sock")
got = threading.Event()
def never_answers(ch):
    for m in ch:
        got.set()
        threading.Event().wait()
threading.Thread(target=lst.serve, args=(never_answers,), daemon=True).start()
ch = ipcwire.connect(lst.url, timeout=10)
def ctrl_c():  # once the request is out: the main thread waits for its reply
    got.wait(10)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=ctrl_c, daemon=True).start()
try:
    ch.request(b"first", timeout=10)
except KeyboardInterrupt:
    print("interrupted", ch.closed)
"""
    )
    assert out == "interrupted True", out  # before: "interrupted False"
