"""Connecting to an mq listener that is gone (killed, or stopped without closing) is
ConnectionRefused at once, naming the URL, the queue it left and what to do, as a stale unix
socket is; with both APIs. Before, connect announced itself into the dead listener's queue and
waited its whole timeout for an answer, then raised Timeout ("its backlog ... is full: it is
overloaded, or stopped calling accept() ..."). reconnect= keeps trying through the refusal
until a new listener adopts the queue; ``ipcwire doctor`` calls a gone listener a problem
(before: "ok", with "not held" in its detail)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator

import pytest
from tests._loops import AioRun
from tests._proc import child, kill9, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.doctor.queues import check_mq
from ipcwire.errors import ConnectionRefused
from ipcwire.mq._rendezvous import lock_path

LISTENER = """
import ipcwire, sys
with ipcwire.listen({url!r}) as listener:
    print("ready", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def dead(mq_url: Callable[..., str]) -> Iterator[str]:
    """The URL of a listener killed with SIGKILL (its queue and lock file stay); a last
    listen() adopts and removes them."""
    url = mq_url()
    with child(LISTENER.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        kill9(proc)
    name = url.removeprefix("mq://")
    assert os.path.exists(lock_path(name))
    try:
        yield url
    finally:
        ipcwire.listen(url).close()
    assert not os.path.exists(lock_path(name))


def _check(exc: ConnectionRefused, url: str, took: float) -> None:
    text = str(exc)
    assert exc.endpoint == url
    assert took < 10, f"took {took:.2f} s: {text}"  # (before: the whole timeout=, 30 s)
    assert f"nothing is listening at {url}: its listener (pid " in text, text
    assert "is gone" in text and lock_path(url.removeprefix("mq://")) in text, text
    assert "adopts it" in text and "reconnect=" in text, text


def test_blocking_connect_is_refused_at_once(dead: str) -> None:
    start = time.monotonic()
    with pytest.raises(ConnectionRefused) as info:
        ipcwire.connect(dead, timeout=30)
    _check(info.value, dead, time.monotonic() - start)


def test_asyncio_connect_is_refused_at_once(dead: str, aio_run: AioRun) -> None:
    async def main() -> None:
        start = time.monotonic()
        with pytest.raises(ConnectionRefused) as info:
            await aio.connect(dead, timeout=30)
        _check(info.value, dead, time.monotonic() - start)

    aio_run(main())


def test_reconnect_waits_through_the_refusal_for_a_new_listener(dead: str) -> None:
    async def main() -> None:
        task = asyncio.create_task(aio.connect(dead, timeout=5, reconnect=5))
        await asyncio.sleep(0)  # its first try ran: refused, it waits to try again
        assert not task.done()
        async with (
            await aio.listen(dead) as listener,  # adopts the queue
            await task as client,
            await listener.accept(timeout=5) as server,
        ):
            await client.send(b"ping")
            assert await server.recv(timeout=5) == b"ping"

    asyncio.run(main())


def test_doctor_says_the_listener_is_gone(dead: str) -> None:
    report = check_mq(dead.removeprefix("mq://"))
    assert not report.ok
    gone = report.find("mq.listener_gone")
    assert gone and gone[0].status == "problem", report.as_dict()
    assert "is gone" in gone[0].summary and "connect() is refused" in gone[0].summary
