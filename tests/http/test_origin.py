"""The REST listener refuses pages of other origins, as ws and sse do, unless ``origins=``
lists them (and then answers their preflight and marks its answers for them).

Before, it had no Origin check at all: any web page a visitor opened could POST to a local
endpoint through the visitor's browser (a form, or ``fetch`` with ``text/plain``, needs no
preflight), and a token-less endpoint's handler got the page's message. And a page that was
meant to call it could not: the preflight got 405. (Chromium itself: tests/browser.)
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError

EVIL = "http://evil.example"
DASH = "http://dashboard.example:8080"


def test_a_page_of_another_origin_is_refused_and_the_server_keeps_serving() -> None:
    with ipcwire.listen("http://127.0.0.1:0", codec="json") as lst:
        got: list[Any] = []

        def serve() -> None:
            with lst.accept(timeout=10) as ch:
                got.append(ch.recv(timeout=10))

        t = threading.Thread(target=serve)
        t.start()
        r = httpx.post(
            lst.url + "/",
            content=b'"from a page"',
            headers={"Origin": EVIL, "Content-Type": "text/plain"},
        )
        assert r.status_code == 403
        assert f"origins=[{EVIL!r}]" in r.json()["detail"]
        r = httpx.post(lst.url + "/", json=["from curl"], timeout=10)  # no Origin: not a page
        assert r.status_code < 300
        t.join(10)
        assert got == [["from curl"]]  # the refused one never reached the application


def test_an_allowed_origin_gets_its_preflight_and_cors_headers() -> None:
    with ipcwire.listen("http://127.0.0.1:0", codec="json", origins=[DASH]) as lst:
        r = httpx.options(
            lst.url + "/",
            headers={
                "Origin": DASH,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, authorization",
            },
        )
        assert r.status_code == 204
        assert r.headers["Access-Control-Allow-Origin"] == DASH
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Headers"] == "content-type, authorization"

        def serve() -> None:
            with lst.accept(timeout=10) as ch:
                ch.send({"echo": ch.recv(timeout=10)})

        t = threading.Thread(target=serve)
        t.start()
        r = httpx.post(lst.url + "/", json={"op": "ping"}, headers={"Origin": DASH}, timeout=10)
        t.join(10)
        assert r.status_code == 200 and r.json() == {"echo": {"op": "ping"}}
        assert r.headers["Access-Control-Allow-Origin"] == DASH
        assert r.headers["Vary"] == "Origin"
        r = httpx.post(lst.url + "/", json=1, headers={"Origin": EVIL})
        assert r.status_code == 403  # listing one origin lets in that one only


def test_a_bad_origins_value_is_refused_before_anything_is_bound(tmp_path: Path) -> None:
    sock = tmp_path / "h.sock"
    with pytest.raises(ConfigurationError, match="is not an origin"):
        ipcwire.listen(f"http+unix://{sock}", origins=["dashboard.example"])
    assert not sock.exists()

    async def main() -> None:
        with pytest.raises(ConfigurationError, match="is not an origin"):
            await aio.listen(f"http+unix://{sock}", origins=["dashboard.example"])
        async with (
            await aio.listen("http://127.0.0.1:0", origins=[DASH]) as lst,
            httpx.AsyncClient() as client,
        ):
            r = await client.post(lst.url + "/", content=b"x", headers={"Origin": EVIL})
            assert r.status_code == 403

    asyncio.run(main())
    assert not sock.exists()
