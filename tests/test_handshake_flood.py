"""A local process opening connections it never handshakes cannot take every descriptor of a
stream listener: past MAX_HANDSHAKING clients in their handshake, the oldest is dropped, and
an honest client still gets in at once (not after handshake_timeout). Before, every such
connection was kept until its handshake_timeout (10 s): enough of them took all the server's
descriptors, and nobody could connect. The cap is lowered for the test (patched on the two
listeners' modules); the clients, sockets and listeners are real.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun

import ipcwire
import ipcwire._stream.aio_listener
import ipcwire._stream.listener
from ipcwire import aio

CAP = 8


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipcwire._stream.listener, "MAX_HANDSHAKING", CAP)
    monkeypatch.setattr(ipcwire._stream.aio_listener, "MAX_HANDSHAKING", CAP)


def _silent(path: str, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        out.append(s)
    return out


def _dropped(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has hung up on (EOF), waiting up to 10 s for each
    (only the oldest are asked, and they must all have been dropped)."""
    n = 0
    for s in socks:
        s.settimeout(10)
        try:
            if s.recv(1) == b"":
                n += 1
        except TimeoutError:
            pass
        except OSError:
            n += 1
    return n


def test_blocking_listener_drops_the_oldest_silent_clients(small_cap: None, tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with ipcwire.listen(f"unix://{path}", handshake_timeout=30) as lst:
        silent = _silent(path, CAP + 4)
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lst.url, timeout=10) as ch:  # pushes one more silent one out
            ch.send(b"honest")
            t.join(10)
            with box[0] as server:
                assert server.recv(timeout=10) == b"honest"
        try:
            assert _dropped(silent[:4]) == 4  # the oldest went
        finally:
            for s in silent:
                s.close()


def test_asyncio_listener_drops_the_oldest_silent_clients(
    small_cap: None, tmp_path: Path, aio_run: AioRun
) -> None:
    path = str(tmp_path / "s.sock")

    async def main() -> None:
        async with await aio.listen(f"unix://{path}", handshake_timeout=30) as lst:
            silent = _silent(path, CAP + 4)
            try:
                accepting = asyncio.ensure_future(lst.accept(timeout=10))
                async with await aio.connect(lst.url, timeout=10) as ch:
                    await ch.send(b"honest")
                    async with await accepting as server:
                        assert await server.recv(timeout=10) == b"honest"
                assert await asyncio.to_thread(_dropped, silent[:4]) == 4
            finally:
                for s in silent:
                    s.close()

    aio_run(main())
