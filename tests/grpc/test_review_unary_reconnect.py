"""gRPC review (rev-grpc2): connect(unary=True, reconnect=SECONDS) keeps retrying a call whose
connection is refused, as the stream client retries its connect."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConnectionRefused

WINDOW = 0.6


def _held_port() -> tuple[str, socket.socket]:
    """A URL whose port a socket holds, bound and not listening: a connection there is
    refused, and no other process (the other pytest worker's) takes the port meanwhile."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return f"grpc://127.0.0.1:{s.getsockname()[1]}", s


def _serve_once(url: str, held: socket.socket, go: threading.Event) -> None:
    """Once ``go`` is set: free the port ``held`` holds, listen at ``url``, echo one call."""
    assert go.wait(10)
    held.close()
    with ipcwire.listen(url) as lis, lis.accept(timeout=10) as ch:
        ch.send(ch.recv(timeout=5))


def _blocking(url: str, reconnect: float, go: threading.Event) -> object:
    with ipcwire.connect(url, unary=True, reconnect=reconnect) as ch:
        go.set()
        return ch.request(b"hi", timeout=10)


def _asyncio(url: str, reconnect: float, go: threading.Event) -> object:
    async def main() -> object:
        async with await aio.connect(url, unary=True, reconnect=reconnect) as ch:
            go.set()
            return await ch.request(b"hi", timeout=10)

    return asyncio.run(main())


@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_a_unary_request_is_retried_within_reconnect(driver: str) -> None:
    """Before, reconnect= was ignored with unary=True: request() to a server not up raised
    ConnectionRefused at once, whose message said "pass reconnect=SECONDS to keep trying"
    (it was passed). Now a refused call is tried again until reconnect= seconds passed (then
    ConnectionRefused), and one whose server comes up meanwhile is answered."""
    request = _blocking if driver == "blocking" else _asyncio
    url, held = _held_port()
    start = time.monotonic()
    with held, pytest.raises(ConnectionRefused):
        request(url, WINDOW, threading.Event())
    assert time.monotonic() - start >= WINDOW  # it kept trying that long

    url, held = _held_port()
    go = threading.Event()
    server = threading.Thread(target=_serve_once, args=(url, held, go), daemon=True)
    server.start()
    assert request(url, 10, go) == b"hi"  # the server starts as the request is tried
    server.join(10)
    assert not server.is_alive()
