"""close() of an asyncio SSE client or listener after its event loop has ended, or while it
is stopped but not closed.

A channel or listener can outlive its loop (returned from ``asyncio.run()``, closed by an
``atexit`` hook). Its ``close()`` raised ``RuntimeError`` ("Event loop is closed" for the
client, "no running event loop" for the listener) and left its sockets open: the listener's
clients stayed connected to nothing. Now it closes without the loop: no exception, every
descriptor released; the client tells the server it is done (the DELETE, as the blocking
client sends it) and the listener's clients see their connection end at once.

In between, the loop stopped (``run_until_complete()`` returned) but not closed, the
listener's ``close()`` still raised ``RuntimeError`` ("no running event loop") and its
clients stayed connected; the client's did not raise, but its socket stayed open and its
DELETE waited, as a task, for a loop that may never run again. Both now close as after the
loop's end, and a loop that does run again finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from tests._loops import LOOPS, AioRun
from tests._proc import open_fds

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken
from ipcwire.sse.aio import AioSseClientChannel

URL = "sse+http://127.0.0.1:0/events"

# These tests leave a channel or listener open when its loop ends, on purpose: asyncio and
# uvloop then warn, rightly, of the transports still open (asyncio when they are collected:
# "unclosed transport", and "loop is closed" for a client's stream writer; uvloop when the
# loop closes: "unclosed resource <TCPTransport ...>", "<TCPServer ...>"). Expected here,
# not a fault of close(). Under -W error they were errors: in the tests, and on uvloop in
# loop.close() itself, which then never returned (its handle walk skips closing a handle
# whose warning raised, and the loop waits for that handle for ever): the run hung.
pytestmark = [
    pytest.mark.filterwarnings("ignore:unclosed transport:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:loop is closed:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:unclosed resource <TCP:ResourceWarning"),
]


def test_an_asyncio_client_closed_after_its_loop_ended(aio_run: AioRun) -> None:
    before = open_fds()
    loop_fds: set[str] = set()
    with ipcwire.listen(URL) as lst:
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(lst.accept(timeout=10)), daemon=True)
        t.start()

        async def main() -> Any:
            loop_fds.update(open_fds())  # the loop's own (uvloop keeps its pipes until it goes)
            client = await aio.connect(lst.url, timeout=10)
            await asyncio.to_thread(t.join, 10)  # (it got the channel)
            got[0].send(b"ping")
            assert await client.recv(timeout=10) == b"ping"
            return client

        client = aio_run(main())
        with got[0] as server:
            client.close()  # raised RuntimeError: Event loop is closed
            assert client.closed
            client.close()  # twice is fine too
            with pytest.raises(ChannelBroken):  # the client released its stream
                server.send(b"after")
    assert open_fds() <= before | loop_fds


def test_an_asyncio_listener_closed_after_its_loop_ended(aio_run: AioRun) -> None:
    before = open_fds()
    loop_fds: set[str] = set()
    holder: list[Any] = []

    async def main() -> Any:
        loop_fds.update(open_fds())
        lst = await aio.listen(URL)
        accepting = asyncio.ensure_future(lst.accept(timeout=10))
        client = await asyncio.to_thread(ipcwire.connect, lst.url, timeout=10, retry_for=0)
        holder.append(client)
        server = await accepting
        await server.send(b"ping")
        assert await asyncio.to_thread(client.recv, timeout=10) == b"ping"
        return lst, server

    lst, server = aio_run(main())
    with holder[0] as client:
        server.close()
        lst.close()  # raised RuntimeError: no running event loop
        lst.close()
        with pytest.raises(ChannelBroken):  # its connection ended, and nothing listens
            client.recv(timeout=10)
    assert open_fds() <= before | loop_fds


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def end_loop(loop: asyncio.AbstractEventLoop) -> None:
    """What asyncio.run() does at the end: cancel the tasks left, let them end, close."""

    async def settle() -> None:
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    loop.run_until_complete(settle())
    loop.close()


def sockets_left(before: set[str], kind: str) -> set[str]:
    """The sockets opened since ``before`` still open. On uvloop none but those whose
    connection close() has shut down already (the peer saw the end): libuv closes their
    descriptors itself, in the loop's next turn (or as it closes); closing one under it
    would have it close a reused number later."""
    return {fd for fd in open_fds() - before if "socket:" in fd and kind == "asyncio"}


@pytest.mark.parametrize("kind", LOOPS)
def test_an_asyncio_listener_closed_while_its_loop_is_stopped(kind: str) -> None:
    loop = new_loop(kind)
    before = open_fds()  # (the loop's own are in)
    try:
        lst = loop.run_until_complete(aio.listen(URL))
        accepting = loop.create_task(lst.accept(timeout=10))
        client = loop.run_until_complete(
            asyncio.to_thread(ipcwire.connect, lst.url, timeout=10, retry_for=0)
        )
        with client:
            server = loop.run_until_complete(accepting)
            loop.run_until_complete(server.send(b"ping"))
            assert loop.run_until_complete(asyncio.to_thread(client.recv, timeout=10)) == b"ping"
            server.close()
            lst.close()  # raised RuntimeError: no running event loop
            lst.close()
            with pytest.raises(ChannelBroken):  # its connection ended, and nothing listens
                client.recv(timeout=10)
        assert not sockets_left(before, kind)
        loop.run_until_complete(lst.aclose())  # the loop runs again: nothing left to do
    finally:
        end_loop(loop)
    assert open_fds() <= before


@pytest.mark.parametrize("kind", LOOPS)
def test_an_asyncio_client_closed_while_its_loop_is_stopped(kind: str) -> None:
    with ipcwire.listen(URL) as lst:
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(lst.accept(timeout=10)), daemon=True)
        t.start()
        loop = new_loop(kind)
        try:
            client = loop.run_until_complete(aio.connect(lst.url, timeout=10))
            t.join(10)
            # the client's socket (its server's end is in this process too, closed by its own
            # thread in its own time)
            assert isinstance(client, AioSseClientChannel) and client._writer is not None
            fd = client._writer.transport.get_extra_info("socket").fileno()
            mine = {entry for entry in open_fds() if entry.split()[0] == str(fd)}
            assert len(mine) == 1
            with got[0] as server:
                server.send(b"ping")
                assert loop.run_until_complete(client.recv(timeout=10)) == b"ping"
                client.close()  # its socket stayed open, its DELETE a task waiting for the loop
                assert client.closed
                with pytest.raises(ChannelBroken):  # the client released its stream
                    server.send(b"after")
            assert not sockets_left(set(), kind) & mine
            loop.run_until_complete(client.aclose())  # the loop runs again: nothing to do
        finally:
            end_loop(loop)
        assert not open_fds() & mine
