"""A gRPC listener closes a connection that does not finish its handshake (TLS on grpcs://,
then the HTTP/2 preface and first SETTINGS frame) within ``handshake_timeout=``, as every other
listener does, blocking and asyncio, grpc://, grpcs:// and grpc+unix://. Before, the option
was taken and ignored: grpcio's own default (120 s) held such connections, so 300 clients that
sent 10 bytes each held 300 of the server's descriptors for two minutes. Meanwhile a normal
client works, and its channel outlives handshake_timeout."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests._proc import wait_until

import ipcwire
from ipcwire import aio

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HANDSHAKE = 0.5  # handshake_timeout= of the listeners here
BOUND = 10.0  # the longest any wait here may take (grpcio's default would be 120 s)
# The start of a TLS ClientHello record (the client stops there).
TLS_START = bytes.fromhex("160301020001")

PLAIN = {"nothing": b"", "10 bytes of the preface": PREFACE[:10], "the preface": PREFACE}
TLS = {"nothing": b"", "part of a ClientHello": TLS_START, "the HTTP/2 preface": PREFACE}


def _open(url: str, sent: dict[str, bytes]) -> dict[str, socket.socket]:
    """Raw connections to the listener at ``url``, each having sent its bytes."""
    socks = {}
    for name, data in sent.items():
        if url.startswith("grpc+unix://"):
            s = socket.socket(socket.AF_UNIX)
            s.connect(url.removeprefix("grpc+unix://"))
        else:
            host, _, port = url.split("://", 1)[1].rpartition(":")
            s = socket.create_connection((host, int(port)), timeout=BOUND)
        s.setblocking(False)
        if data:
            s.sendall(data)
        socks[name] = s
    return socks


def _closed(s: socket.socket) -> bool:
    """Whether the server closed ``s`` (what it sent before is read and dropped)."""
    try:
        while data := s.recv(65536):
            del data
        return True
    except BlockingIOError:
        return False
    except OSError:  # ECONNRESET: closed with our bytes unread
        return True


def _still_open(socks: dict[str, socket.socket]) -> list[str]:
    return [name for name, s in socks.items() if not _closed(s)]


def _url(scheme: str, tmp: Path) -> str:
    return {
        "grpc": "grpc://127.0.0.1:0",
        "grpcs": "grpcs://127.0.0.1:0",
        "grpc+unix": f"grpc+unix://{tmp}/hs.sock",
    }[scheme]


SCHEMES = ["grpc", "grpcs", "grpc+unix"]


@pytest.fixture
def tls_kw(tls_files: tuple[Path, Path]) -> Callable[[str, bool], dict[str, Any]]:
    cert, key = tls_files

    def kw(scheme: str, listening: bool) -> dict[str, Any]:
        if scheme != "grpcs":
            return {}
        return {"certfile": cert, "keyfile": key} if listening else {"cafile": cert}

    return kw


@pytest.mark.parametrize("scheme", SCHEMES)
def test_blocking_listener_closes_unfinished_handshakes(
    scheme: str, tmp_path: Path, tls_kw: Any
) -> None:
    url = _url(scheme, tmp_path)
    with ipcwire.listen(url, handshake_timeout=HANDSHAKE, **tls_kw(scheme, True)) as lis:
        socks = _open(lis.url, TLS if scheme == "grpcs" else PLAIN)
        began = time.monotonic()
        try:
            with (
                ipcwire.connect(lis.url, timeout=BOUND, **tls_kw(scheme, False)) as ch,
                lis.accept(timeout=BOUND) as peer,
            ):
                ch.send(b"ping")
                assert peer.recv(timeout=BOUND) == b"ping"
                assert wait_until(lambda: not _still_open(socks), BOUND), (
                    f"still open after {time.monotonic() - began:.1f} s: {_still_open(socks)}"
                )
                # the normal client's channel outlives handshake_timeout
                peer.send(b"pong")
                assert ch.recv(timeout=BOUND) == b"pong"
        finally:
            for s in socks.values():
                s.close()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_asyncio_listener_closes_unfinished_handshakes(
    scheme: str, tmp_path: Path, tls_kw: Any
) -> None:
    url = _url(scheme, tmp_path)

    async def main() -> None:
        lis = await aio.listen(url, handshake_timeout=HANDSHAKE, **tls_kw(scheme, True))
        socks = _open(lis.url, TLS if scheme == "grpcs" else PLAIN)
        try:
            ch = await aio.connect(lis.url, timeout=BOUND, **tls_kw(scheme, False))
            peer = await lis.accept(timeout=BOUND)
            await ch.send(b"ping")
            assert await peer.recv(timeout=BOUND) == b"ping"
            deadline = time.monotonic() + BOUND
            while _still_open(socks) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # (polling: the loop serves grpc meanwhile)
            assert not _still_open(socks), _still_open(socks)
            await peer.send(b"pong")
            assert await ch.recv(timeout=BOUND) == b"pong"
            await ch.aclose()
            await peer.aclose()
        finally:
            for s in socks.values():
                s.close()
            await lis.aclose()

    asyncio.run(main())
