"""The members of a hello and a welcome are checked (docs/protocol.md section 3): a value
of the wrong kind or outside its range is refused with a ``protocol`` error reply that names
the member and what it must be, on a real Unix socket, and a client given such a welcome
raises ``RemoteProtocolError`` naming it.

Before, ``max_frame: 0`` was taken, then every non-empty reply failed on the server with
FrameTooLarge while the client saw silence and EOF; -5, "abc" and 1e30 were ignored; a
``goodbye`` of ``true`` was taken and 2 silently was not; ``"ipcwire": "1"`` was answered
"speaks ipcwire protocol '1', this side 1".
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ipcwire
from ipcwire._core.handshake import ClientHandshake, ServerHandshake
from ipcwire.channel import Channel, Listener
from ipcwire.errors import RemoteProtocolError


def _frame(obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    return len(body).to_bytes(4, "big") + body


def _read_frame(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise EOFError(head)
        head += chunk
    size = int.from_bytes(head, "big")
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            raise EOFError(body)
        body += chunk
    return body


def _echo(ch: Channel) -> None:
    for msg in ch:
        ch.send({"echo": msg})


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[tuple[Listener, str]]:
    path = str(tmp_path / "s.sock")
    with ipcwire.listen(f"unix://{path}", codec="json", handshake_timeout=5) as lis:
        t = threading.Thread(target=lis.serve, args=(_echo,), daemon=True)
        t.start()
        yield lis, path
    t.join(5)


def _hello(path: str, hello: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(_frame(hello))
        answer: dict[str, Any] = json.loads(_read_frame(sock))
        if "error" in answer:  # then the server closes
            assert sock.recv(1) == b""
        return answer


BASE = {"ipcwire": 1, "codec": "json", "framing": "length"}


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("max_frame", 0),
        ("max_frame", -5),
        ("max_frame", "abc"),
        ("max_frame", 1e30),
        ("max_frame", 2**32),
        ("max_frame", True),
        ("goodbye", 2),
        ("goodbye", True),
        ("goodbye", "1"),
        ("ipcwire", "1"),
        ("ipcwire", 1.5),
        ("ipcwire", True),
        ("codec", 5),
        ("codec", None),
        ("nonce", 7),
        ("nonce", "zz"),
    ],
)
def test_a_bad_member_is_refused_naming_it(
    echo: tuple[Listener, str], member: str, value: object
) -> None:
    _, path = echo
    answer = _hello(path, {**BASE, member: value})
    assert answer["code"] == "protocol", answer
    assert answer["ipcwire"] == 1
    assert f'"{member}"' in answer["error"] and "must be" in answer["error"], answer


def test_a_missing_codec_is_refused_naming_it(echo: tuple[Listener, str]) -> None:
    _, path = echo
    answer = _hello(path, {"ipcwire": 1})
    assert answer["code"] == "protocol" and '"codec"' in answer["error"]


@pytest.mark.parametrize(
    "hello",
    [
        {"ipcwire": 1, "codec": "json"},  # framing and max_frame are optional
        {**BASE, "max_frame": 64},
        {**BASE, "max_frame": 0xFFFFFFFE},
        {**BASE, "goodbye": 0},
        {**BASE, "goodbye": 1},
        {**BASE, "later": "a member this version does not know"},
    ],
)
def test_valid_hellos_are_still_welcome(echo: tuple[Listener, str], hello: dict[str, Any]) -> None:
    _, path = echo
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(_frame(hello))
        welcome = json.loads(_read_frame(sock))
        assert welcome["ipcwire"] == 1 and "error" not in welcome, welcome
        sock.sendall(_frame("ping"))
        assert json.loads(_read_frame(sock)) == {"echo": "ping"}


def test_another_version_gets_the_version_reply(echo: tuple[Listener, str]) -> None:
    _, path = echo
    answer = _hello(path, {**BASE, "ipcwire": 2})
    assert answer["code"] == "version" and answer["ipcwire"] == 1
    assert "protocol 2, this side 1" in answer["error"]


def _serve_one_welcome(sock: socket.socket, welcome: dict[str, Any]) -> None:
    conn, _ = sock.accept()
    with conn:
        _read_frame(conn)
        conn.sendall(_frame(welcome))
        conn.settimeout(5)
        while conn.recv(4096):  # until the client hangs up
            pass


@pytest.mark.parametrize(
    ("member", "value"),
    [("max_frame", 0), ("max_frame", "abc"), ("goodbye", True), ("ipcwire", "1")],
)
def test_the_client_refuses_a_bad_welcome_naming_it(
    tmp_path: Path, member: str, value: object
) -> None:
    path = str(tmp_path / "w.sock")
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen(1)
        welcome = {"ipcwire": 1, "max_frame": 1000, member: value}
        t = threading.Thread(target=_serve_one_welcome, args=(srv, welcome), daemon=True)
        t.start()
        with pytest.raises(RemoteProtocolError, match=f'"{member}" must be'):
            ipcwire.connect(f"unix://{path}", codec="json", timeout=5)
        t.join(5)


@pytest.mark.parametrize("welcome", [{"ipcwire": 1, "max_frame": -1}, {"ipcwire": 1, "goodbye": 2}])
def test_the_core_client_refuses_a_bad_welcome(welcome: dict[str, Any]) -> None:
    c = ClientHandshake(codec="json", framing="length", max_frame=10, token=None, endpoint="x")
    c.hello()
    with pytest.raises(RemoteProtocolError, match="must be"):
        c.receive(json.dumps(welcome).encode())


def test_the_core_server_refuses_with_a_protocol_reply() -> None:
    s = ServerHandshake(codec="json", framing="ndjson", max_frame=10, token=b"t", endpoint="x")
    step = s.receive(json.dumps({"ipcwire": 1, "codec": "json", "nonce": 5}).encode())
    assert step.error is not None
    reply = json.loads(step.send)
    assert reply["code"] == "protocol" and '"nonce"' in reply["error"]
