"""close() of an asyncio channel or listener after its event loop has ended.

A channel can outlive the loop that made it: returned from ``aio_run(main())``, kept in a
global, closed by an ``atexit`` hook or a test fixture on another loop. Its ``close()`` then
cannot use the loop, and raised ``RuntimeError: Event loop is closed`` (unix, tcp), leaving
the descriptor open and the peer waiting. Now it closes without the loop: it does not raise,
the peer sees the end of the channel at once (``EndOfChannel``, the goodbye), and no
descriptor is left open. The peer here is a blocking channel in the same process, alive while
the asyncio side's loop is gone.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun
from tests._proc import open_fds

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, EndOfChannel, IpcwireError
from ipcwire.registry import lookup


def _name() -> str:
    return f"ipcwca-{uuid.uuid4().hex[:10]}"


URLS: dict[str, Callable[[Path], str]] = {
    "unix": lambda d: f"unix://{d}/u.sock",
    "tcp": lambda d: "tcp://127.0.0.1:0",
    "fifo": lambda d: f"fifo://{d}/f",
    "shm": lambda d: f"shm://{_name()}",
    "mq": lambda d: f"mq://{_name()}",
    "spool": lambda d: f"spool://{d}/q",
    "ws": lambda d: "ws://127.0.0.1:0/x",
    "ws+unix": lambda d: f"ws+unix://{d}/w.sock",
}


def _on_uvloop() -> bool:
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")


Ending = type[IpcwireError] | None


def _expect_end(end: Ending, uvloop: bool, receive: Callable[[], Any]) -> None:
    """The peer sees the end: ``end`` (EndOfChannel: the goodbye; None: a shared queue, such
    as spool, has no end to see); or on uvloop, which closes every transport when its loop
    closes, the ChannelBroken of a channel dropped without a close."""
    if end is None:
        return
    with pytest.raises((end, ChannelBroken) if uvloop else end):
        receive()


def _accept_in_thread(lst: Any) -> tuple[threading.Thread, list[Any]]:
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(lst.accept(timeout=10)), daemon=True)
    t.start()
    return t, got


def client_closed_after_its_loop(url: str, aio_run: AioRun, *, end: Ending) -> None:
    """An asyncio client, closed after its loop ended; its peer a blocking channel."""
    before = open_fds()
    loop_fds: set[str] = set()
    uv: list[bool] = []
    with ipcwire.listen(url) as lst:
        t, got = _accept_in_thread(lst)

        async def main() -> Any:
            loop_fds.update(open_fds())  # the loop's own (uvloop keeps its pipes until it goes)
            uv.append(_on_uvloop())
            client = await aio.connect(lst.url, timeout=10)
            await client.send(b"ping")
            return client

        client = aio_run(main())
        t.join(10)
        with got[0] as server:
            assert server.recv(timeout=10) == b"ping"
            client.close()  # raised RuntimeError: Event loop is closed
            assert client.closed
            client.close()  # twice is fine too
            _expect_end(end, uv[0], lambda: server.recv(timeout=10))
    assert open_fds() <= before | loop_fds


def listener_closed_after_its_loop(url: str, aio_run: AioRun, *, end: Ending) -> None:
    """An asyncio listener and its channel, closed after their loop ended; the peer a
    blocking client."""
    before = open_fds()
    loop_fds: set[str] = set()
    uv: list[bool] = []
    holder: list[Any] = []

    async def main() -> Any:
        loop_fds.update(open_fds())
        uv.append(_on_uvloop())
        lst = await aio.listen(url)
        holder.append(lst)
        accepting = asyncio.ensure_future(lst.accept(timeout=10))
        client = await asyncio.to_thread(ipcwire.connect, lst.url, timeout=10)
        holder.append(client)
        client.send(b"ping")  # (before the accept: a udp listener accepts at a datagram)
        server = await accepting
        assert await server.recv(timeout=10) == b"ping"
        return server

    server = aio_run(main())
    lst, client = holder
    with client:
        server.close()
        _expect_end(end, uv[0], lambda: client.recv(timeout=10))
    lst.close()
    assert open_fds() <= before | loop_fds


def _ending(kind: str) -> Ending:
    return EndOfChannel if lookup(kind).capabilities.end_of_channel else None


@pytest.mark.parametrize("kind", sorted(URLS))
def test_an_asyncio_client_closed_after_its_loop_ended(
    kind: str, tmp_path: Path, aio_run: AioRun
) -> None:
    client_closed_after_its_loop(URLS[kind](tmp_path), aio_run, end=_ending(kind))


@pytest.mark.parametrize("kind", sorted(set(URLS) - {"fifo"}))  # a fifo client only sends
def test_an_asyncio_listener_and_its_channel_closed_after_their_loop_ended(
    kind: str, tmp_path: Path, aio_run: AioRun
) -> None:
    # websockets' server ends its connections (1011) when the end of the loop cancels its
    # tasks, before any close: the peer has its ChannelBroken then.
    end = ChannelBroken if kind.startswith("ws") else _ending(kind)
    listener_closed_after_its_loop(URLS[kind](tmp_path), aio_run, end=end)


def test_udp_channels_and_listener_closed_after_their_loop_ended(aio_run: AioRun) -> None:
    """udp has no end to tell the peer: close() must not raise and must close the sockets."""
    before = open_fds()
    loop_fds: set[str] = set()

    async def main() -> tuple[Any, Any, Any]:
        loop_fds.update(open_fds())
        lst = await aio.listen("udp://127.0.0.1:0")
        client = await aio.connect(lst.url)
        await client.send(b"ping")
        server = await lst.accept(timeout=10)
        assert await server.recv(timeout=10) == b"ping"
        return lst, client, server

    lst, client, server = aio_run(main())
    for obj in (client, server, lst):
        obj.close()  # the client and the listener raised RuntimeError
        assert obj.closed
    assert open_fds() <= before | loop_fds
