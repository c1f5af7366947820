"""A ``ws://`` listener at a non-ASCII or percent-escaped path is reachable at that path.

Before, the listener compared the raw request path (``/%C3%A9``) with its decoded one
(``/é``) and answered 404 "no WebSocket endpoint at /%C3%A9...; this server's endpoint is /é"
to every client, ipcwire's or curl's; and ipcwire's client sent a path with a space as a raw
space (``GET /a b``), which no server parses. Now the client sends the path percent-encoded
and the listener compares decoded paths: the URL the listener was given (or reports), its
percent-escaped spelling and a raw HTTP client all reach it. Both APIs."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from urllib.parse import quote

import pytest

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.errors import ConnectionRefused

# (path written in the URL, the same path spelled the other way)
PATHS = [
    ("/é日本🎉", "/%C3%A9%E6%97%A5%E6%9C%AC%F0%9F%8E%89"),
    ("/%C3%A9x", "/éx"),
    ("/a%20b", "/a b"),
    ("/a b", "/a%20b"),
    ("/100%25", "/100%25"),
    ("/a%3Fb", "/a%3fb"),
    ("/a%23b", "/a%23b"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _echo_blocking(lst: ipcwire.Listener, url: str) -> None:
    with ipcwire.connect(url, codec="json", timeout=5) as c, lst.accept(timeout=5) as s:
        c.send(["é", url])
        s.send(s.recv(timeout=5))
        assert c.recv(timeout=5) == ["é", url]


def _raw_upgrade(port: int, path: str) -> str:
    """The status line a plain HTTP client gets for an upgrade to ``path`` (sent as is)."""
    key = base64.b64encode(os.urandom(16)).decode()
    req = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\n"
        f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req.encode("ascii"))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\r\n")[0].decode("latin-1")


@pytest.mark.parametrize(("path", "other"), PATHS)
def test_blocking_listener_is_reachable(path: str, other: str) -> None:
    port = _free_port()
    url = f"ws://127.0.0.1:{port}{path}"
    with ipcwire.listen(url, codec="json") as lst:
        for target in (url, lst.url, f"ws://127.0.0.1:{port}{other}"):
            _echo_blocking(lst, target)
        encoded = quote(parse_url(url).path, safe="/")
        assert _raw_upgrade(port, encoded).startswith("HTTP/1.1 101"), encoded
        lst.accept(timeout=5).close()  # (the raw client's channel)
        # a different path is still refused, naming the path it asked for (decoded)
        with pytest.raises(ConnectionRefused) as info:
            ipcwire.connect(f"ws://127.0.0.1:{port}/other%C3%A9", timeout=5)
        assert "no WebSocket endpoint at /otheré" in str(info.value), str(info.value)


@pytest.mark.parametrize(("path", "other"), PATHS)
def test_asyncio_listener_is_reachable(path: str, other: str) -> None:
    port = _free_port()
    url = f"ws://127.0.0.1:{port}{path}"

    async def main() -> None:
        async with await aio.listen(url, codec="json") as lst:
            for target in (url, lst.url, f"ws://127.0.0.1:{port}{other}"):
                c = await aio.connect(target, codec="json", timeout=5)
                async with c, await lst.accept(timeout=5) as s:
                    await c.send(["é", target])
                    await s.send(await s.recv(timeout=5))
                    assert await c.recv(timeout=5) == ["é", target]
            encoded = quote(parse_url(url).path, safe="/")
            status = await asyncio.to_thread(_raw_upgrade, port, encoded)
            assert status.startswith("HTTP/1.1 101"), (encoded, status)
            async with await lst.accept(timeout=5):
                pass  # (the raw client's channel)
            with pytest.raises(ConnectionRefused) as info:
                await aio.connect(f"ws://127.0.0.1:{port}/other%C3%A9", timeout=5)
            assert "no WebSocket endpoint at /otheré" in str(info.value), str(info.value)

    asyncio.run(main())
