"""gRPC review (rev-grpc2): close() of asyncio gRPC channels that outlived their event loop
(returned from ``asyncio.run()``) marks them closed, without raising or warning."""

from __future__ import annotations

import asyncio
import gc
import socket
import urllib.parse
import warnings

import pytest

from ipcwire import aio
from ipcwire.aio import AioChannel, AioListener
from ipcwire.errors import ChannelClosed


async def _open(unary: bool) -> tuple[AioListener, AioChannel, AioChannel]:
    lis = await aio.listen("grpc://127.0.0.1:0")
    client = await aio.connect(lis.url, unary=unary, timeout=5)
    if unary:
        reply = asyncio.ensure_future(client.request(b"x", timeout=5))
        srv = await lis.accept(timeout=5)
        await srv.send(await srv.recv(timeout=5))
        assert await reply == b"x"
    else:
        await client.send(b"x")
        srv = await lis.accept(timeout=5)
        assert await srv.recv(timeout=5) == b"x"
    return lis, client, srv


@pytest.mark.parametrize("unary", [False, True], ids=["stream", "unary"])
def test_close_after_the_loop_ended(unary: bool) -> None:
    """Before: the stream client's and the server channel's close() raised RuntimeError
    ("Event loop is closed") and warned "coroutine 'AioStream._close_when_written' was never
    awaited"; the unary client's raised RuntimeError ("no running event loop")."""
    lis, client, srv = asyncio.run(_open(unary))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for ch in (client, srv):
            ch.close()  # no loop: must not raise
            assert ch.closed
            ch.close()  # (twice is fine too)
        lis.close()
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], caught
    for ch in (client, srv):  # closed for the application too
        with pytest.raises(ChannelClosed):
            asyncio.run(ch.send(b"late"))


def test_a_listener_closed_while_its_loop_is_stopped_stops_when_it_runs_again() -> None:
    """The loop stopped (run_until_complete() returned), not closed: close() did not raise,
    but it took the server for one whose loop had ended and never stopped it, so its port
    stayed open for the life of the process, even once the loop ran again (aclose() there
    returned at once). Now the stop is started in the server's own loop: the port closes as
    soon as that loop runs (grpc.aio cannot stop a server without it)."""
    loop = asyncio.new_event_loop()
    try:
        lis, client, srv = loop.run_until_complete(_open(False))
        port = urllib.parse.urlsplit(lis.url).port
        assert port is not None
        for ch in (client, srv, lis):
            ch.close()  # a stopped loop: must not raise
        loop.run_until_complete(lis.aclose())  # waits for the server to stop
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
