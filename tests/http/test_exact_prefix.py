"""session=False posts to the exact prefix (docs/mechanisms/rest.md: "request() is one
POST {prefix}"), so a foreign HTTP server that routes only that path answers it.

Before, the client posted to ``{prefix}/`` (httpx's base URL ends with a slash), and a
server routing exactly ``/api`` answered 404: ``RemoteProtocolError``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import ipcwire
from ipcwire import aio


class _Exact(BaseHTTPRequestHandler):
    """Answers POST at exactly ``self.server.route`` with {"path": ..., "echo": body}."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        route = self.server.route  # type: ignore[attr-defined]
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        if self.path != route:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        out = json.dumps({"path": self.path, "echo": json.loads(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(route: str) -> Iterator[tuple[str, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exact)
    server.route = route  # type: ignore[attr-defined]
    server.seen = []  # type: ignore[attr-defined]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


@pytest.fixture(params=["/api", "/a/b", "/"])
def exact(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, list[str]]]:
    route = request.param
    for base, seen in _serve(route):
        yield base + (route if route != "/" else ""), route, seen


def test_blocking_posts_the_exact_prefix(exact: tuple[str, str, list[str]]) -> None:
    url, route, seen = exact
    with ipcwire.connect(url, codec="json", session=False, timeout=5) as ch:
        assert ch.request({"n": 1}, timeout=5) == {"path": route, "echo": {"n": 1}}
        ch.send({"n": 2})
        assert ch.recv(timeout=5) == {"path": route, "echo": {"n": 2}}
    assert seen == [route, route]


def test_asyncio_posts_the_exact_prefix(exact: tuple[str, str, list[str]]) -> None:
    url, route, seen = exact

    async def main() -> object:
        async with await aio.connect(url, codec="json", session=False, timeout=5) as ch:
            return await ch.request({"n": 1}, timeout=5)

    assert asyncio.run(main()) == {"path": route, "echo": {"n": 1}}
    assert seen == [route]


def test_ipcwire_server_answers_the_exact_prefix_and_the_slash() -> None:
    """ipcwire's own server takes both ``{prefix}`` and ``{prefix}/``; its channels still
    live under ``{prefix}/channels``."""
    with ipcwire.listen("http://127.0.0.1:0/api", codec="json") as lis:

        def echo(ch: ipcwire.Channel) -> None:
            for msg in ch:
                ch.send({"echo": msg})

        t = threading.Thread(target=lis.serve, args=(echo,), daemon=True)
        t.start()
        with ipcwire.connect(lis.url, codec="json", session=False, timeout=5) as ch:
            assert ch.request(1, timeout=5) == {"echo": 1}
        with ipcwire.connect(lis.url, codec="json", timeout=5) as ch:
            assert ch.request(2, timeout=5) == {"echo": 2}
    t.join(5)
