"""A client that does not speak HTTP/1.1 gets 400 and one WARNING line, not a traceback.

A gRPC client (HTTP/2 with prior knowledge) at an http:// or sse+http:// listener made the
server log an ERROR of ``aiohttp.server`` with a full traceback (``BadHttpMessage ... Pause on
PRI/Upgrade``); a TLS client or garbage was not logged at all (aiohttp's DEBUG). Now each is
one WARNING of ``ipcwire`` naming the client and what it seems to be, the client gets
``400 Bad Request``, and the server keeps serving.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

import ipcwire
from ipcwire.channel import Channel, Listener

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x12\x04\x00\x00\x00\x00\x00"


def _client_hello() -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _send(port: int, data: bytes) -> bytes:
    """Send ``data`` as a client would, and return the server's answer (to its close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def _echo(ch: Channel) -> None:
    if ch.url.startswith("sse"):  # (SSE goes one way: server to client)
        ch.send(b"ok")
        return
    for msg in ch:
        ch.send(msg)


@pytest.fixture(params=["http://127.0.0.1:0/api", "sse+http://127.0.0.1:0/events"])
def listener(request: pytest.FixtureRequest) -> Iterator[Listener]:
    with ipcwire.listen(request.param) as lis:
        t = threading.Thread(target=lis.serve, args=(_echo,), daemon=True)
        t.start()
        yield lis
    t.join(5)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (H2_PREFACE, "an HTTP/2 (gRPC?) client: this endpoint speaks HTTP/1.1; check the URL's"),
        (None, "a TLS client"),
        (os.urandom(8) + b"\x00\xff" * 20, "not an HTTP/1.1 request"),
        (b"\x00\x00\x00\x10" + b'{"ipcwire":1}', "a tcp:// or unix:// client"),
    ],
    ids=["http2-grpc", "tls", "random", "ipcwire-stream"],
)
def test_a_client_of_another_protocol_is_one_warning_line(
    listener: Listener, data: bytes | None, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(listener.url.split(":")[2].split("/")[0])
    caplog.set_level(logging.DEBUG)
    answer = _send(port, _client_hello() if data is None else data)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0], answer[:80]
    ours = [r for r in caplog.records if r.name == "ipcwire" and "sent" in r.getMessage()]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    (line,) = ours
    assert line.levelno == logging.WARNING
    assert says in line.getMessage()
    assert listener.url in line.getMessage() and "a client at 127.0.0.1" in line.getMessage()
    assert line.exc_info is None
    theirs = [r for r in caplog.records if r.name == "aiohttp.server" or r.exc_info]
    assert not theirs, [r.getMessage() for r in theirs]  # (sse's access log line may stay)
    # ... and the server keeps serving
    with ipcwire.connect(listener.url, timeout=5) as ch:
        if not listener.url.startswith("sse"):
            ch.send(b"ok")
        assert ch.recv(timeout=5) == b"ok"


def test_a_flood_of_them_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """Twenty gRPC clients: five lines, the rest counted in one at the listener's close."""
    caplog.set_level(logging.INFO)
    with ipcwire.listen("http://127.0.0.1:0/api") as lis:
        port = int(lis.url.split(":")[2].split("/")[0])
        for _ in range(20):
            assert b" 400 " in _send(port, H2_PREFACE)
    lines = [
        r.getMessage() for r in caplog.records if r.name == "ipcwire" and "HTTP/2" in r.getMessage()
    ]
    assert len(lines) == 6, lines
    assert "15 more clients answered 400" in lines[-1], lines[-1]
