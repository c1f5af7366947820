"""A body that breaks HTTP's chunked encoding is a network error: the client drops that
connection and reconnects, whichever read brings the bad bytes.

EventSource (WHATWG HTML 9.2) fails the connection for good only for an answer that is not an
event stream (a status other than 200, another content type); a connection that fails on the
way is reestablished, and a malformed chunked body is such a failure (Fetch: a network error).
ipcwire's client did both, depending on how the bytes came: a bad chunk in a later read was
dropped and reconnected, but one in the read that brought the response head (the server sent
them in one write) was RemoteProtocolError for good, from connect() or from the recv() that
reconnected. The servers here send each answer in one write.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio

BOUND = 20.0  # a guard; never reached

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
BAD = HEAD + b"zz\r\n"  # a chunk size that is not hex


def good(n: int) -> bytes:
    event = b"data: %d\n\n" % n
    return HEAD + b"%x\r\n" % len(event) + event + b"\r\n"


@contextmanager
def scripted(answers: list[bytes]) -> Iterator[str]:
    """A server that answers its n-th connection with ``answers[n]`` in one write, then ends
    it (the client reconnects); after the last, it stops accepting. Yields its URL."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve() -> None:
        for answer in answers:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conns.append(conn)
            conn.settimeout(BOUND)
            conn.recv(65536)
            conn.sendall(answer)
            conn.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"sse+http://127.0.0.1:{srv.getsockname()[1]}/events"
    finally:
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()
        t.join(BOUND)
        for conn in conns:
            conn.close()


# the bad chunk in the first connection's first read, then in a reconnection's
SCRIPTS = {"first": [BAD, good(1), good(2)], "reconnecting": [good(1), BAD, good(2)]}


@pytest.mark.parametrize("where", list(SCRIPTS))
def test_a_bad_chunk_in_the_read_with_the_head_reconnects(where: str) -> None:
    with (
        scripted(SCRIPTS[where]) as url,
        ipcwire.connect(url, codec="json", retry=0, timeout=BOUND) as ch,
    ):
        got = [ch.recv(timeout=BOUND)]
        if where == "reconnecting":
            got.append(ch.recv(timeout=BOUND))
    assert got == ([1, 2] if where == "reconnecting" else [1])


@pytest.mark.parametrize("where", list(SCRIPTS))
def test_asyncio_a_bad_chunk_in_the_read_with_the_head_reconnects(
    where: str, aio_run: AioRun
) -> None:
    async def main() -> list[object]:
        with scripted(SCRIPTS[where]) as url:
            async with await aio.connect(url, codec="json", retry=0, timeout=BOUND) as ch:
                got = [await ch.recv(timeout=BOUND)]
                if where == "reconnecting":
                    got.append(await ch.recv(timeout=BOUND))
                return got

    assert aio_run(main()) == ([1, 2] if where == "reconnecting" else [1])
