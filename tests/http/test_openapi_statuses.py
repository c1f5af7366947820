"""The OpenAPI description lists the statuses the server really answers, per operation: each
is driven into the real server with httpx, and the document must list what came back for
that operation (a generated client, or a reader of the description, otherwise meets
answers it was never told of: a bogus channel id's 404, a refused Origin's 403)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

import ipcwire
from ipcwire.channel import Listener

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVIL = {"Origin": "http://evil.example", **AUTH}
CT = {"Content-Type": "application/json"}
BOGUS = "bogus-id"


@pytest.fixture
def listener() -> Iterator[Listener]:
    with ipcwire.listen("http://127.0.0.1:0/api", codec="json", token=TOKEN) as lis:
        yield lis


def _hello() -> bytes:
    return msgspec.json.encode({"ipcwire": 1, "codec": "json"})


def _operations(sid: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, the document's path, the request's path, request arguments) per operation."""
    return [
        # (Ipcwire-Timeout: 0: nothing serves the listener, so it answers 504 at once)
        ("post", "/api", "/api", {"content": b"1", "headers": CT | {"Ipcwire-Timeout": "0"}}),
        ("post", "/api/channels", "/api/channels", {"content": _hello(), "headers": CT}),
        ("post", "/api/channels/{id}", f"/api/channels/{sid}", {"content": b"1", "headers": CT}),
        ("delete", "/api/channels/{id}", f"/api/channels/{sid}", {}),
        ("get", "/api/channels/{id}/stream", f"/api/channels/{sid}/stream", {}),
        (
            "post",
            "/api/channels/{id}/messages",
            f"/api/channels/{sid}/messages",
            {"content": b"1", "headers": CT},
        ),
        ("get", "/api/channels/{id}/messages", f"/api/channels/{sid}/messages", {}),
    ]


def _listed(doc: Any, method: str, path: str) -> set[int]:
    return {int(s) for s in doc["paths"][path][method]["responses"]}


def test_every_status_the_server_answers_is_listed(listener: Listener) -> None:
    seen: dict[tuple[str, str], set[int]] = {}
    with httpx.Client(base_url=listener.url.removesuffix("/api"), timeout=10) as http:
        doc = msgspec.json.decode(http.get("/api/openapi.json", headers=AUTH).content)
        for method, path, real, kw in _operations(BOGUS):
            got = seen.setdefault((method, path), set())
            for headers in (EVIL, {}, AUTH):  # a refused Origin, no token, a bogus channel
                extra = kw.get("headers", {})
                r = http.request(method, real, content=kw.get("content"), headers=extra | headers)
                got.add(r.status_code)
        # A malformed wait= on a real channel's poll.
        r = http.post("/api/channels", content=_hello(), headers=CT | AUTH)
        sid = msgspec.json.decode(r.content)["channel"]
        r = http.get(f"/api/channels/{sid}/messages", params={"wait": "soon"}, headers=AUTH)
        seen[("get", "/api/channels/{id}/messages")].add(r.status_code)
    assert 403 in seen[("get", "/api/channels/{id}/stream")]  # (the probe did reach them)
    assert 404 in seen[("get", "/api/channels/{id}/messages")]
    missing = {
        f"{method.upper()} {path}": sorted(statuses - _listed(doc, method, path))
        for (method, path), statuses in seen.items()
        if statuses - _listed(doc, method, path)
    }
    assert not missing, f"statuses the server answered that the description leaves out: {missing}"


def test_open_when_full_is_listed() -> None:
    """503 ``busy`` when max_channels= are open."""
    with (
        ipcwire.listen(
            "http://127.0.0.1:0/api", codec="json", max_channels=1, max_sessions=None
        ) as lis,
        httpx.Client(base_url=lis.url.removesuffix("/api"), timeout=10) as http,
    ):
        doc = msgspec.json.decode(http.get("/api/openapi.json").content)
        statuses = {http.post("/api/channels", content=_hello(), headers=CT).status_code}
        statuses.add(http.post("/api/channels", content=_hello(), headers=CT).status_code)
    assert statuses == {201, 503}
    assert statuses <= _listed(doc, "post", "/api/channels")
