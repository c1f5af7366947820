"""A connect returns as soon as the listener exists, before anyone calls accept(), as on
every other mechanism (a socket's connection completes into the kernel's accept queue):
the listener answers clients itself, up to its backlog=, and accept() hands the channels
over later. Before, a blocking listener answered only inside accept(), so
``with listen(u) as s: c = connect(s.url, timeout=2); s.accept()`` raised Timeout after the
full timeout ("the listener is busy or gone (its queue exists, nobody accepted)"), with the
listener alive in the same process. Channels nobody accepted are closed with the listener:
their clients see the end, and no descriptor is left open."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import EndOfChannel

AT_ONCE = 1.0  # seconds; the connect timeout is 5


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _answering_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ipcwire mq accept")]


def test_blocking_connect_returns_before_accept(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    with ipcwire.listen(url) as listener:
        began = time.monotonic()
        with ipcwire.connect(url, timeout=5) as client:
            took = time.monotonic() - began
            assert took < AT_ONCE, f"connect waited {took:.2f} s for an accept()"
            with listener.accept(timeout=5) as server:
                client.send(b"ping")
                assert server.recv(timeout=5) == b"ping"
                server.send(b"pong")
                assert client.recv(timeout=5) == b"pong"


def test_asyncio_connect_returns_before_accept_on_a_blocking_listener(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url()

    async def main(listener: ipcwire.Listener) -> None:
        began = time.monotonic()
        async with await aio.connect(url, timeout=5) as client:
            assert time.monotonic() - began < AT_ONCE
            with listener.accept(timeout=5) as server:
                await client.send(b"ping")
                assert server.recv(timeout=5) == b"ping"

    with ipcwire.listen(url) as listener:
        asyncio.run(main(listener))


def test_asyncio_connect_returns_before_accept(mq_url: Callable[..., str]) -> None:
    url = mq_url()

    async def main() -> None:
        async with await aio.listen(url) as listener:
            began = time.monotonic()
            async with await aio.connect(url, timeout=5) as client:
                assert time.monotonic() - began < AT_ONCE
                async with await listener.accept(timeout=5) as server:
                    await client.send(b"ping")
                    assert await server.recv(timeout=5) == b"ping"

    asyncio.run(main())


def test_blocking_channels_nobody_accepted_close_with_the_listener(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url("backlog=3&maxmsg=2")  # (small queues: RLIMIT_MSGQUEUE is per user)
    before = _fds()
    listener = ipcwire.listen(url)
    clients = [ipcwire.connect(url, timeout=5) for _ in range(3)]
    assert len(_answering_threads()) == 1
    listener.close()
    assert _answering_threads() == []  # the answering thread ended with the listener
    for client in clients:
        with client, pytest.raises(EndOfChannel):
            client.recv(timeout=5)
    assert _fds() == before  # the listener's ends of those channels were closed too


def test_asyncio_channels_nobody_accepted_close_with_the_listener(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url("backlog=3&maxmsg=2")  # (small queues: RLIMIT_MSGQUEUE is per user)

    async def main() -> None:
        before = _fds()
        listener = await aio.listen(url)
        clients = [await aio.connect(url, timeout=5) for _ in range(3)]
        await listener.aclose()
        for client in clients:
            async with client:
                with pytest.raises(EndOfChannel):
                    await client.recv(timeout=5)
        assert _fds() == before

    asyncio.run(main())
