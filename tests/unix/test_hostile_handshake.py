"""Hostile handshakes over real sockets: whatever a peer sends before the handshake is done,
it is refused with a reason, and the listener goes on serving the others."""

from __future__ import annotations

import asyncio
import fcntl
import json
import socket
import struct
import termios
import threading
import time
import tracemalloc
from collections.abc import Callable

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.errors import RemoteProtocolError

# JSON nested deeper than Python's recursion limit, in one handshake frame (under 64 KiB)
_DEEP = b"[" * 60000
_DEEP_FRAME = struct.pack(">I", len(_DEEP)) + _DEEP


def _send_deep_hello(path: str) -> dict[str, object]:
    """A raw client: a deeply nested hello; returns the server's refusal, decoded."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(5)
        raw.connect(path)
        raw.sendall(_DEEP_FRAME)
        reply = b""
        while chunk := raw.recv(4096):
            reply += chunk
    assert len(reply) >= 4, "the server closed without saying why"
    (n,) = struct.unpack(">I", reply[:4])
    refusal = json.loads(reply[4 : 4 + n])
    assert isinstance(refusal, dict)
    return refusal


def test_a_deeply_nested_hello_is_refused_and_the_blocking_listener_keeps_serving(
    unix_url: Callable[[], str],
) -> None:
    """The hello's RecursionError escaped the handshake and ended the acceptor thread: the
    client got no reason, and no client was ever accepted again (connect timed out)."""
    url = unix_url()
    with ipcwire.listen(url) as lst:
        refusal = _send_deep_hello(url.removeprefix("unix://"))
        assert refusal["code"] == "protocol"
        with ipcwire.connect(url, timeout=3) as client, lst.accept(timeout=3) as ch:
            client.send(b"still serving")
            assert ch.recv(timeout=3) == b"still serving"


def test_a_deeply_nested_hello_is_refused_by_the_asyncio_listener(
    unix_url: Callable[[], str], aio_run: AioRun
) -> None:
    """asyncio logged 'Fatal error: protocol.buffer_updated() call failed' with the
    RecursionError's traceback and dropped the client without a reason."""
    url = unix_url()

    async def main() -> None:
        lst = await aio.listen(url)
        try:
            refusal = await asyncio.to_thread(_send_deep_hello, url.removeprefix("unix://"))
            assert refusal["code"] == "protocol"
            async with (
                await aio.connect(url, timeout=3) as client,
                await lst.accept(timeout=3) as ch,
            ):
                await client.send(b"still serving")
                assert await ch.recv(timeout=3) == b"still serving"
        finally:
            lst.close()

    aio_run(main())


@pytest.fixture
def deep_server(unix_url: Callable[[], str]) -> tuple[str, threading.Thread]:
    """A raw server that answers every hello with a deeply nested frame (twice)."""
    url = unix_url()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(url.removeprefix("unix://"))
    srv.listen(4)

    def answer_twice() -> None:
        with srv:
            for _ in range(2):
                conn, _ = srv.accept()
                with conn:
                    conn.sendall(_DEEP_FRAME)
                    conn.recv(1)  # until the client hangs up

    t = threading.Thread(target=answer_twice, daemon=True)
    t.start()
    return url, t


def test_a_server_answering_with_a_deeply_nested_frame_is_a_protocol_error_on_both_apis(
    deep_server: tuple[str, threading.Thread], aio_run: AioRun
) -> None:
    """connect() raised a bare RecursionError on both APIs."""
    url, t = deep_server
    with pytest.raises(RemoteProtocolError, match="not an ipcwire handshake"):
        ipcwire.connect(url, timeout=5)

    async def main() -> None:
        with pytest.raises(RemoteProtocolError, match="not an ipcwire handshake"):
            await aio.connect(url, timeout=5)

    aio_run(main())
    t.join(5)


# A hello that promises 60,000 bytes and stops after 13 (under the handshake's 64 KiB limit)
_STALLED_HELLO = struct.pack(">I", 60000) + b'{"ipcwire": 1'
_CLIENTS = 200


def _stall_clients(path: str) -> list[socket.socket]:
    """Clients that each send the start of a hello and stop there, once the listener has
    read what they sent (a Unix socket's SIOCOUTQ counts the bytes its peer has not read:
    polled, bounded, as nothing can be waited on)."""
    socks = []
    for _ in range(_CLIENTS):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        socks.append(s)
        s.connect(path)
        s.sendall(_STALLED_HELLO)
    deadline = time.monotonic() + 10
    for s in socks:
        while struct.unpack("i", fcntl.ioctl(s, termios.TIOCOUTQ, b"\0" * 4))[0]:
            assert time.monotonic() < deadline, "the listener never read a client's hello"
            time.sleep(0.002)
    return socks


def _memory_per_client(run: Callable[[], list[socket.socket]]) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        socks = run()
        per_client = (tracemalloc.get_traced_memory()[0] - before) / _CLIENTS
    finally:
        tracemalloc.stop()
    for s in socks:
        s.close()
    return per_client


def test_clients_stalled_in_their_handshake_cost_the_blocking_listener_what_they_sent(
    unix_url: Callable[[], str],
) -> None:
    """Each connection not past its handshake held a 256 KiB receive buffer, allocated and
    zeroed: 3000 such clients (13 bytes each, or none) took 780 MB of the server's memory,
    before any token was checked. Now a few KiB, growing with what the client sends."""
    url = unix_url()
    with ipcwire.listen(url) as lst:
        per_client = _memory_per_client(lambda: _stall_clients(url.removeprefix("unix://")))
        assert per_client < 32 * 1024
        with ipcwire.connect(url, timeout=3) as client, lst.accept(timeout=3) as ch:
            client.send(b"x" * 100_000)
            assert ch.recv(timeout=3) == b"x" * 100_000


def test_clients_stalled_in_their_handshake_cost_the_asyncio_listener_what_they_sent(
    unix_url: Callable[[], str], aio_run: AioRun
) -> None:
    url = unix_url()

    async def main() -> float:
        lst = await aio.listen(url)
        try:
            path = url.removeprefix("unix://")
            per_client = await asyncio.to_thread(_memory_per_client, lambda: _stall_clients(path))
            async with (
                await aio.connect(url, timeout=3) as client,
                await lst.accept(timeout=3) as ch,
            ):
                await client.send(b"x" * 100_000)
                assert await ch.recv(timeout=3) == b"x" * 100_000
            return per_client
        finally:
            lst.close()

    assert aio_run(main()) < 32 * 1024
