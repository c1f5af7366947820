"""The channel protocol of docs/mechanisms/rest.md ("The channel protocol, on the wire"),
spoken with ``http.client`` alone against ipcwire's server, and served by a stdlib
``http.server`` to ipcwire's client: the documented bodies, headers, statuses and token
proof are enough to implement either side.

Before, an open request of ``{}`` was answered 409 ``version`` ("this server speaks ipcwire
protocol 1"), though the missing members were the problem; now 400 ``malformed`` naming
the member and what it must be.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import ipcwire
from ipcwire.channel import Channel, Listener
from ipcwire.http._protocol import proof

TOKEN = "s3cret"


def _echo(ch: Channel) -> None:
    for msg in ch:
        ch.send({"echo": msg})


@pytest.fixture
def server() -> Iterator[tuple[Listener, http.client.HTTPConnection]]:
    with ipcwire.listen("http://127.0.0.1:0/api", codec="json", token=TOKEN) as lis:
        t = threading.Thread(target=lis.serve, args=(_echo,), daemon=True)
        t.start()
        port = int(lis.url.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            yield lis, conn
        finally:
            conn.close()
    t.join(5)


def _call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=sent)
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


@pytest.mark.parametrize(
    ("hello", "names"),
    [
        (b"{}", '"ipcwire"'),
        (b'{"codec": "json"}', '"ipcwire"'),
        (b'{"ipcwire": "1", "codec": "json"}', '"ipcwire"'),
        (b'{"ipcwire": true, "codec": "json"}', '"ipcwire"'),
        (b'{"ipcwire": 1}', '"codec"'),
        (b'{"ipcwire": 1, "codec": 5}', '"codec"'),
        (b'{"ipcwire": 1, "codec": "json", "max_frame": 0}', '"max_frame"'),
        (b'{"ipcwire": 1, "codec": "json", "max_frame": "big"}', '"max_frame"'),
        (b'{"ipcwire": 1, "codec": "json", "nonce": 7}', '"nonce"'),
        (b'{"ipcwire": 1, "codec": "json", "nonce": "zz"}', '"nonce"'),
    ],
)
def test_a_bad_open_request_is_400_naming_the_member(
    server: tuple[Listener, http.client.HTTPConnection], hello: bytes, names: str
) -> None:
    _, conn = server
    status, headers, body = _call(conn, "POST", "/api/channels", hello)
    doc = json.loads(body)
    assert (status, headers["content-type"], doc["code"]) == (
        400,
        "application/problem+json",
        "malformed",
    ), doc
    assert names in doc["detail"], doc


def test_another_version_is_409_version(
    server: tuple[Listener, http.client.HTTPConnection],
) -> None:
    _, conn = server
    status, _, body = _call(conn, "POST", "/api/channels", b'{"ipcwire": 2, "codec": "json"}')
    doc = json.loads(body)
    assert (status, doc["code"]) == (409, "version")
    assert "speaks ipcwire protocol 1" in doc["detail"] and "2" in doc["detail"]


def test_the_documented_exchange(server: tuple[Listener, http.client.HTTPConnection]) -> None:
    _, conn = server
    nonce = secrets.token_bytes(16)
    hello = {"ipcwire": 1, "codec": "json", "nonce": nonce.hex()}
    status, headers, body = _call(conn, "POST", "/api/channels", json.dumps(hello).encode())
    assert status == 201, body
    opened = json.loads(body)
    sid = opened["channel"]
    assert opened["ipcwire"] == 1 and isinstance(opened["max_frame"], int)
    assert headers["location"] == f"/api/channels/{sid}"
    # the server's proof: HMAC-SHA256(token, "ipcwire-http-server" 00 nonce 00 channel id)
    want = hmac.new(
        TOKEN.encode(), b"ipcwire-http-server\0" + nonce + b"\0" + sid.encode(), hashlib.sha256
    ).hexdigest()
    assert opened["proof"] == want
    # one message, its reply
    status, headers, body = _call(conn, "POST", f"/api/channels/{sid}", b'{"n": 1}')
    assert (status, headers["content-type"], json.loads(body)) == (
        200,
        "application/json",
        {"echo": {"n": 1}},
    )
    # send (204), then the long poll: a batch of 4-byte big-endian lengths and messages
    status, _, _ = _call(conn, "POST", f"/api/channels/{sid}/messages", b'{"n": 2}')
    assert status == 204
    status, headers, body = _call(conn, "GET", f"/api/channels/{sid}/messages?wait=5")
    assert (status, headers["content-type"]) == (200, "application/x-ipcwire-frames")
    size = int.from_bytes(body[:4], "big")
    assert json.loads(body[4 : 4 + size]) == {"echo": {"n": 2}} and len(body) == 4 + size
    # send and ask for the reply in the same response
    status, _, body = _call(
        conn, "POST", f"/api/channels/{sid}/messages", b'{"n": 3}', {"Ipcwire-Reply": "5"}
    )
    assert (status, json.loads(body)) == (200, {"echo": {"n": 3}})
    # a batch in: two messages, framed
    batch = b"".join(len(m).to_bytes(4, "big") + m for m in (b'{"n": 4}', b'{"n": 5}'))
    status, _, _ = _call(
        conn,
        "POST",
        f"/api/channels/{sid}/messages",
        batch,
        {"Content-Type": "application/x-ipcwire-frames"},
    )
    assert status == 204
    got: list[Any] = []
    while len(got) < 2:
        status, _, body = _call(conn, "GET", f"/api/channels/{sid}/messages?wait=5")
        assert status == 200
        while body:
            size = int.from_bytes(body[:4], "big")
            got.append(json.loads(body[4 : 4 + size]))
            body = body[4 + size :]
    assert got == [{"echo": {"n": 4}}, {"echo": {"n": 5}}]
    # close: 204, and the channel is gone
    assert _call(conn, "DELETE", f"/api/channels/{sid}")[0] == 204
    status, _, body = _call(conn, "POST", f"/api/channels/{sid}", b"1")
    assert (status, json.loads(body)["code"]) == (404, "no_channel")


class _Foreign(BaseHTTPRequestHandler):
    """A server written from the page alone: opens channels with the documented proof,
    answers ``POST /api/channels/{id}`` with the message echoed, closes on DELETE."""

    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, body: bytes = b"", ctype: str = "application/json") -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, b'{"code": "unauthorized"}', "application/problem+json")
        elif self.path == "/api/channels":
            hello = json.loads(body)
            nonce = bytes.fromhex(hello["nonce"])
            msg = b"ipcwire-http-server\0" + nonce + b"\0" + b"c1"
            mac = hmac.new(TOKEN.encode(), msg, hashlib.sha256).hexdigest()
            answer = {"ipcwire": 1, "channel": "c1", "max_frame": 1 << 20, "proof": mac}
            self._answer(201, json.dumps(answer).encode())
        elif self.path == "/api/channels/c1":
            self._answer(200, json.dumps({"echo": json.loads(body)}).encode())
        else:
            self._answer(404)

    def do_DELETE(self) -> None:
        self.server.deleted.set()  # type: ignore[attr-defined]
        self._answer(204)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_foreign_server_serves_an_ipcwire_client_with_a_token() -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Foreign)
    srv.deleted = threading.Event()  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/api"
        with ipcwire.connect(url, codec="json", token=TOKEN, timeout=5) as ch:
            assert ch.request({"n": 1}, timeout=5) == {"echo": {"n": 1}}
        assert srv.deleted.wait(5)  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def test_the_documented_proof_example() -> None:
    """rest.md's example: token s3cret, nonce 00 01 ... 0f, channel c1."""
    want = "b49a4c316b3794a1ef6e556668c06ab369e079f1c4b090091e5676086365cf5f"
    assert want in (Path(__file__).parents[2] / "docs" / "mechanisms" / "rest.md").read_text()
    assert proof(b"s3cret", bytes(range(16)), "c1") == want
