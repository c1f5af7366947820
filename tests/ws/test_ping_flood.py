"""A peer that sends pings and never reads cannot fill the server's memory with pongs.

Every ping is answered with a pong of the same size. The blocking driver's writes never wait
(``ipcwire.ws._writer``: what the socket cannot take is queued) and the asyncio transport
buffers whatever is written to it, so a client that sent pings as fast as it could and never
read made the server queue every pong: about 20 MB a second (blocking) and 35 MB a second
(asyncio) in a probe, for as long as it went on, before any token was checked. RFC 6455
section 5.5.3 lets an endpoint that has not yet sent its pong to earlier pings answer only
the most recent one: while pongs cannot go out, the newest one waits (in place of the
others) and goes once the peer reads again. The client's connections share that bound: a
hostile server flooding an ipcwire client is tested too (with the bound taken away, the
client held 2.6 MB of pongs).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest
from tests._loops import AioRun
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

import ipcwire
from ipcwire import aio

PINGS = 20_000  # 2.5 MB of pongs (the kernel's buffers are made small: they hold ~50 KB)
BOUND = 512 * 1024  # what the server may hold (asyncio: pongs of one read, before it knows)


def _ping(payload: bytes) -> bytes:
    """One masked client ping (zero masking key)."""
    return bytes([0x89, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


FLOOD = _ping(b"p" * 125) * PINGS + _ping(b"last") + bytes([0x82, 0x83, 0, 0, 0, 0]) + b"end"


def _upgraded(url: str) -> tuple[socket.socket, ClientProtocol]:
    """A raw connection through the WebSocket upgrade (a small receive buffer: it will not
    read for a while), and the sans-I/O client that parses what it gets later."""
    if url.startswith("ws+unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = url.removeprefix("ws+unix://")
        uri = "ws://localhost/"
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        host, port = url.split("//")[1].split("/", 1)[0].rsplit(":", 1)
        target = (host, int(port))
        uri = url
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(target)  # type: ignore[arg-type]
    proto = ClientProtocol(parse_uri(uri))
    proto.send_request(proto.connect())
    for data in proto.data_to_send():
        sock.sendall(data)
    while not proto.events_received():
        proto.receive_data(sock.recv(4096))
    assert proto.handshake_exc is None
    return sock, proto


def _small_buffer(sock: socket.socket) -> None:
    """The server's side of the connection buffers little in the kernel (on loopback it
    would grow to megabytes), so what it holds shows in its own queue."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


def _flood(sock: socket.socket) -> threading.Thread:
    t = threading.Thread(target=sock.sendall, args=(FLOOD,), daemon=True)
    t.start()
    return t


def _last_pong(sock: socket.socket, proto: ClientProtocol) -> bytes:
    """Read what the server wrote until the pong of the last ping comes."""
    sock.settimeout(30)  # a guard
    while True:
        data = sock.recv(1 << 16)
        assert data, "the server ended the connection before the last pong"
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.PONG and event.data == b"last":
                return bytes(event.data)


def _url(kind: str, tmp_path: Path) -> str:
    return f"ws+unix://{tmp_path}/ws.sock" if kind == "ws+unix" else "ws://127.0.0.1:0/app"


@pytest.mark.parametrize("kind", ["ws", "ws+unix"])
def test_a_ping_flood_from_a_peer_that_does_not_read_stays_bounded(
    kind: str, tmp_path: Path
) -> None:
    with ipcwire.listen(_url(kind, tmp_path), codec="bytes", ping_interval=None) as listener:
        peer, proto = _upgraded(listener.url)
        with listener.accept(timeout=10) as ch, peer:  # (the peer goes first)
            _small_buffer(ch._writer.sock)  # type: ignore[attr-defined]
            sender = _flood(peer)
            assert ch.recv(timeout=30) == b"end"  # every ping before it was answered
            held = ch._writer.queued  # type: ignore[attr-defined]
            assert held < BOUND, f"{held} bytes of pongs held for a peer that does not read"
            assert _last_pong(peer, proto) == b"last"
            sender.join(10)


@pytest.mark.parametrize("kind", ["ws", "ws+unix"])
def test_a_ping_flood_stays_bounded_on_asyncio(kind: str, tmp_path: Path, aio_run: AioRun) -> None:
    async def main() -> None:
        url = _url(kind, tmp_path)
        async with await aio.listen(url, codec="bytes", ping_interval=None) as listener:
            peer, proto = await asyncio.to_thread(_upgraded, listener.url)
            async with await listener.accept(timeout=10) as ch:
                with peer:  # (the peer goes first)
                    _small_buffer(ch._conn.transport.get_extra_info("socket"))  # type: ignore[attr-defined]
                    sender = _flood(peer)
                    assert await ch.recv(timeout=30) == b"end"
                    held = ch._conn.transport.get_write_buffer_size()  # type: ignore[attr-defined]
                    assert held < BOUND, f"{held} bytes of pongs held for a peer that does not read"
                    assert await asyncio.to_thread(_last_pong, peer, proto) == b"last"
                    await asyncio.to_thread(sender.join, 10)

    aio_run(main())


# -- the other way: a hostile server floods an ipcwire client --------------------------------
# A server's frames are not masked; the client's pongs are (one bytes object each, as the
# library writes a control frame), and the same bound holds on the client's connections.
SERVER_FLOOD = (
    (bytes([0x89, 125]) + b"p" * 125) * PINGS
    + bytes([0x89, 4])
    + b"last"
    + bytes([0x82, 3])
    + b"end"
)


def _hostile_server() -> socket.socket:
    """A listening socket whose connections buffer little (it will not read for a while)."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    return lst


def _serve_upgrade(lst: socket.socket, box: list[tuple[socket.socket, ServerProtocol]]) -> None:
    """Accept one client and answer its upgrade with a 101 (no ipcwire welcome)."""
    sock, _ = lst.accept()
    sock.settimeout(30)  # a guard
    proto = ServerProtocol()
    while not (events := proto.events_received()):
        proto.receive_data(sock.recv(4096))
    request = events[0]
    assert isinstance(request, Request)
    proto.send_response(proto.accept(request))
    for data in proto.data_to_send():
        sock.sendall(data)
    box.append((sock, proto))


def _server_last_pong(sock: socket.socket, proto: ServerProtocol) -> bytes:
    while True:
        data = sock.recv(1 << 16)
        assert data, "the client ended the connection before the last pong"
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.PONG and event.data == b"last":
                return bytes(event.data)


def test_a_ping_flood_from_a_server_stays_bounded_in_the_client() -> None:
    with _hostile_server() as lst:
        box: list[tuple[socket.socket, ServerProtocol]] = []
        server = threading.Thread(target=_serve_upgrade, args=(lst, box))
        server.start()
        url = f"ws://127.0.0.1:{lst.getsockname()[1]}/"
        with ipcwire.connect(url, codec="bytes", ping_interval=None, timeout=10) as ch:
            server.join(10)
            peer, proto = box[0]
            with peer:
                _small_buffer(ch._writer.sock)  # type: ignore[attr-defined]
                sender = threading.Thread(target=peer.sendall, args=(SERVER_FLOOD,), daemon=True)
                sender.start()
                assert ch.recv(timeout=30) == b"end"  # every ping before it was answered
                held = ch._writer.queued  # type: ignore[attr-defined]
                assert held < BOUND, f"{held} bytes of pongs held for a server that does not read"
                assert _server_last_pong(peer, proto) == b"last"
                sender.join(10)


def test_a_ping_flood_from_a_server_stays_bounded_in_the_asyncio_client(aio_run: AioRun) -> None:
    async def main() -> None:
        with _hostile_server() as lst:
            box: list[tuple[socket.socket, ServerProtocol]] = []
            server = threading.Thread(target=_serve_upgrade, args=(lst, box))
            server.start()
            url = f"ws://127.0.0.1:{lst.getsockname()[1]}/"
            async with await aio.connect(url, codec="bytes", ping_interval=None, timeout=10) as ch:
                await asyncio.to_thread(server.join, 10)
                peer, proto = box[0]
                with peer:
                    transport = ch._conn.transport  # type: ignore[attr-defined]
                    _small_buffer(transport.get_extra_info("socket"))
                    sender = threading.Thread(
                        target=peer.sendall, args=(SERVER_FLOOD,), daemon=True
                    )
                    sender.start()
                    assert await ch.recv(timeout=30) == b"end"
                    held = transport.get_write_buffer_size()
                    assert held < BOUND, (
                        f"{held} bytes of pongs held for a server that does not read"
                    )
                    assert await asyncio.to_thread(_server_last_pong, peer, proto) == b"last"
                    await asyncio.to_thread(sender.join, 10)

    aio_run(main())
