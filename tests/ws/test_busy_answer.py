"""A blocking WebSocket listener that cannot start a handshake thread for a client (its
process at the limit of a pids cgroup) answers it with HTTP 503, Retry-After and a body
saying why, from its acceptor thread: ipcwire's client raises ResourceExhausted naming the
endpoint, the thread limit and "try again later" (as shm:// says it), a plain HTTP client
reads the 503. Before, the socket was closed unanswered: "did not complete a WebSocket
handshake: did not receive a valid HTTP response; is it a WebSocket endpoint?" or "closed
the connection during the handshake". The limit is real (tests/shm/_pids.py).
"""

from __future__ import annotations

import socket

from tests._proc import child, wait_line
from tests.shm._pids import thread_limit

import ipcwire
from ipcwire.errors import ResourceExhausted

SERVER = """
import logging, sys
import ipcwire
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
with ipcwire.listen("ws://127.0.0.1:0/x") as lst:
    print(lst.url, flush=True)
    ch = lst.accept(timeout=20)
    ch.send(ch.recv(timeout=20))
    ch.close()
"""


def _raw_upgrade(url: str) -> bytes:
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(
            b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


def test_a_client_without_a_thread_is_told_to_try_again_later() -> None:
    with thread_limit() as limit, child(SERVER) as proc:
        url = wait_line(proc)
        limit.add(proc.pid)
        limit.hold()  # no new thread in the server from now on
        for _ in range(2):  # told each time, the listener goes on
            try:
                ipcwire.connect(url, timeout=5).close()
            except ResourceExhausted as exc:
                text = str(exc)
            else:
                raise AssertionError("connected without a handshake thread")
            assert text.startswith(f"{url} refused the connection: the server cannot start"), text
            assert "limit of processes/threads; try again later" in text, text
        answer = _raw_upgrade(url)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), answer
        assert b"\r\nRetry-After: 1" in head, answer
        assert body.startswith(url.encode()) and b"try again later" in body, answer
        limit.lift()
        with ipcwire.connect(url, timeout=5) as ch:
            assert ch.request(b"ping", timeout=5) == b"ping"
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    assert "Exception in thread" not in err and "ERROR" not in err, err
