"""connect(reconnect=) keeps trying when the server goes away between accepting and
answering (a restarting server: the connection reset, or closed before the handshake's
answer), as it does when the connection is refused. In a restart storm (100 restarts, 50
clients) connect(reconnect=20) raised ChannelBroken hundreds of times ("broke while
handshaking with it: the peer reset...", "closed the connection during the handshake: it is
not an ipcwire endpoint...") though the server was back a moment later (helper-106).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken


def _restarting_server(path: Path, stop: threading.Event) -> threading.Thread:
    """Accept one connection and close it unanswered (a server going down), then come back
    as a real ipcwire listener on the same path."""
    raw = socket.socket(socket.AF_UNIX)
    raw.bind(str(path))
    raw.listen(8)

    def run() -> None:
        conn, _ = raw.accept()
        conn.close()
        raw.close()
        os.unlink(path)
        with ipcwire.listen(f"unix://{path}") as lst:
            threading.Thread(target=lst.serve, args=(_echo,), daemon=True).start()
            stop.wait(30)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _echo(ch: ipcwire.Channel) -> None:
    for m in ch:
        ch.send(m)


def test_blocking_connect_tries_again_after_a_server_that_went_away(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stop = threading.Event()
    t = _restarting_server(path, stop)
    try:
        with ipcwire.connect(f"unix://{path}", reconnect=20, timeout=5) as ch:
            assert ch.request(b"hi", timeout=10) == b"hi"
    finally:
        stop.set()
        t.join(10)


def test_asyncio_connect_tries_again_after_a_server_that_went_away(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stop = threading.Event()
    t = _restarting_server(path, stop)

    async def main() -> None:
        async with await aio.connect(f"unix://{path}", reconnect=20, timeout=5) as ch:
            assert await ch.request(b"hi", timeout=10) == b"hi"

    try:
        asyncio.run(main())
    finally:
        stop.set()
        t.join(10)


def test_without_reconnect_it_is_an_error_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    raw = socket.socket(socket.AF_UNIX)
    raw.bind(str(path))
    raw.listen(1)

    def drop() -> None:
        conn, _ = raw.accept()
        conn.close()

    threading.Thread(target=drop, daemon=True).start()
    with pytest.raises(ChannelBroken, match="handshak"):  # (reset, or end of stream)
        ipcwire.connect(f"unix://{path}", timeout=5)
    raw.close()
