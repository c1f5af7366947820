"""ipcwire's SSE client reaches a listener at a non-ASCII or percent-escaped path.

Before, the client wrote the path into its request line as it is (raw UTF-8 for
``sse+http://127.0.0.1:P/é日本🎉`` and ``/%C3%A9``, a raw space for ``/a%20b``), and ipcwire's
own listener answered HTTP 400 "Invalid char in url path" or "Bad status line", while curl got
200 from it. Now the client sends the path percent-encoded (the GET and the DELETE that ends
its stream), and a listener's url escapes what would read back as something else (``%``,
``?``, ``#``, spaces). Both APIs."""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import quote

import pytest
from tests._proc import wait_until

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.sse.blocking import SseServerChannel

# (path written in the URL, the same path spelled the other way)
PATHS = [
    ("/é日本🎉", "/%C3%A9%E6%97%A5%E6%9C%AC%F0%9F%8E%89"),
    ("/%C3%A9", "/é"),
    ("/a%20b", "/a b"),
    ("/100%25", "/100%25"),
    ("/a%3Fb", "/a%3fb"),
]


def _held(listener: Any) -> set[str]:
    """The ids of the streams the listener holds (its table: no public view of it)."""
    return set(listener._server.table.streams)


def _raw_status(port: int, path: str) -> str:
    """The status line a plain HTTP client gets for a GET of ``path`` (sent as is)."""
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
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
def test_ipcwire_clients_reach_the_listener(path: str, other: str) -> None:
    with ipcwire.listen(f"sse+http://127.0.0.1:0{path}", codec="json") as lst:
        port = parse_url(lst.url).port
        assert port is not None
        targets = [
            f"sse+http://127.0.0.1:{port}{path}",
            lst.url,
            f"sse+http://127.0.0.1:{port}{other}",
        ]
        for target in targets:
            c = ipcwire.connect(target, codec="json", timeout=5)
            with lst.accept(timeout=5) as s, c:  # (the client closes first)
                assert isinstance(s, SseServerChannel)
                s.send(["é", target])
                assert c.recv(timeout=5) == ["é", target]
            # the client's close (a DELETE at the same path) ended its stream at once
            assert wait_until(lambda: not _held(lst), 5), _held(lst)

        async def main() -> None:
            for target in targets:
                c = await aio.connect(target, codec="json", timeout=5)
                with await asyncio.to_thread(lst.accept, timeout=5) as s:
                    async with c:  # (the client closes first)
                        s.send(["é", target])
                        assert await c.recv(timeout=5) == ["é", target]
                assert await asyncio.to_thread(wait_until, lambda: not _held(lst), 5)

        asyncio.run(main())
        encoded = quote(parse_url(f"sse+http://127.0.0.1:{port}{path}").path, safe="/")
        assert _raw_status(port, encoded).startswith("HTTP/1.1 200"), encoded
