"""ipcwire's SSE client against a hostile (or broken) server, written by hand on a raw socket:
whatever it sends, the client's calls end within their timeouts with typed errors.

The client runs in a child interpreter, so that a client that hangs (or spins) fails the test
instead of wedging the test process."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken
from ipcwire.sse.blocking import SseClientChannel

BOUND = 20.0  # seconds the child may take before the test calls it a hang; never reached

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nX-Ipcwire-Stream: s\r\n\r\n"
)


@contextmanager
def raw_server(head: bytes, body: bytes, go: threading.Event) -> Iterator[str]:
    """A server that answers every request with ``head``, then, once ``go`` is set, with
    ``body``, and leaves the connection open; yields its sse+http URL."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return  # closed: the test is over
            conns.append(conn)
            conn.recv(65536)
            conn.sendall(head)
            if go.wait(BOUND):
                conn.sendall(body)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"sse+http://127.0.0.1:{srv.getsockname()[1]}/events"
    finally:
        go.set()
        srv.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() alone does not)
        srv.close()
        t.join(5)
        for conn in conns:
            conn.close()


# The child connects, says so (the server then sends the body: a read of its own), and
# prints what recv() raised.
CLIENT = """
import asyncio, sys, ipcwire
from ipcwire import aio

url, flavour = sys.argv[1], sys.argv[2]

def show(exc):
    print(type(exc).__name__, exc, flush=True)

if flavour == "blocking":
    with ipcwire.connect(url, retry_for=0) as ch:
        print("open", flush=True)
        try:
            ch.recv(timeout=5)
        except Exception as exc:
            show(exc)
else:
    async def main():
        async with await aio.connect(url, retry_for=0) as ch:
            print("open", flush=True)
            try:
                await ch.recv(timeout=5)
            except Exception as exc:
                show(exc)
    asyncio.run(main())
"""


def client_error(head: bytes, body: bytes, flavour: str) -> tuple[str, str]:
    """What the child's ``recv()`` raised (its type and message) when the server sends
    ``body`` after ``head``; and the server's URL."""
    go = threading.Event()
    with raw_server(head, body, go) as url:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, url, flavour],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "open\n", proc.communicate(timeout=BOUND)
            go.set()
            out, err = proc.communicate(timeout=BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"recv(timeout=5) did not return within {BOUND} s")
    assert proc.returncode == 0, err
    return out.strip(), url


@pytest.mark.parametrize("flavour", ["blocking", "asyncio"])
@pytest.mark.parametrize("size", [b"-6", b"+1", b"0x1", b"1_0", b""])
def test_a_chunk_size_that_is_not_hex_digits_is_a_protocol_error(flavour: str, size: bytes) -> None:
    """int(text, 16) takes a sign, a 0x prefix and underscores. A negative size moved the
    decoder back in its input: ``-6`` after a chunk ending in CRLF led it back to that CRLF,
    then to the same header, for ever (recv(timeout=5) never returned, the event loop of an
    asyncio client stood still, and the decoder's list of pieces grew without bound)."""
    said, url = client_error(HEAD, b"1\r\n:\r\n" + size + b"\r\nX", flavour)
    assert said.startswith("ChannelBroken"), said
    assert "bad chunk size" in said and url in said, said


@contextmanager
def one_answer(answer: bytes) -> Iterator[tuple[str, list[socket.socket]]]:
    """A server that answers each request with ``answer`` (in one write; a client that
    reconnects gets it again); yields its URL and a list that gets the server's end of each
    connection."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return  # closed: the test is over
            conns.append(conn)
            conn.recv(65536)
            conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"sse+http://127.0.0.1:{srv.getsockname()[1]}/events", conns
    finally:
        srv.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() alone does not)
        t.join(BOUND)
        srv.close()
        for conn in conns:
            conn.close()


def closed_by_client(conns: list[socket.socket]) -> bool:
    """Whether the client closed the connection: the server's end reads EOF (or a reset,
    when the client closed with bytes it had not read)."""
    assert len(conns) == 1
    conns[0].settimeout(BOUND)
    try:
        return conns[0].recv(1) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def test_a_malformed_body_in_the_read_with_the_head_closes_the_connection() -> None:
    """The body bytes that come in the same read as the response head are parsed when the
    connection opens; a protocol error there (here a bad chunk size) escaped connect() with
    the socket still open: left to the garbage collector (ResourceWarning), and not even to it
    while the exception's traceback lives. Such a connection is now dropped at once and
    reconnected, as one whose bad chunk comes in a later read (tests/sse/test_malformed_body.py):
    with retry_for=0, recv() says so (after one more attempt, when no time has passed)."""
    with (
        one_answer(HEAD + b"zz\r\n") as (url, conns),
        ipcwire.connect(url, timeout=BOUND, retry_for=0) as ch,
    ):
        assert closed_by_client(conns)
        with pytest.raises(ChannelBroken, match="bad chunk size") as info:
            ch.recv(timeout=BOUND)
        assert url in str(info.value)


def test_asyncio_a_malformed_body_in_the_read_with_the_head_closes_the_connection(
    aio_run: AioRun,
) -> None:
    async def main() -> None:
        with one_answer(HEAD + b"zz\r\n") as (url, conns):
            async with await aio.connect(url, timeout=BOUND, retry_for=0) as ch:
                assert await asyncio.to_thread(closed_by_client, conns)
                with pytest.raises(ChannelBroken, match="bad chunk size") as info:
                    await ch.recv(timeout=BOUND)
                assert url in str(info.value)

    aio_run(main())


FOREIGN_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
# ids are optional per event: one without an id: field keeps the last one (WHATWG 9.2.6)
FOREIGN_BODY = b"id: job-1\ndata: 1\n\ndata: 2\n\nevent: message\ndata: 3\n\n"


def test_events_without_an_id_of_their_own_are_not_duplicates() -> None:
    """A server that is not ipcwire's gives an id to some events only (here ``job-1``, which
    looks like ipcwire's ``<stream>-<n>``). The events after it carry the same last event
    id, and the client took each for a repeat of event 1 and dropped it: 2 and 3 were lost
    silently."""
    with (
        one_answer(FOREIGN_HEAD + FOREIGN_BODY) as (url, _),
        ipcwire.connect(url, codec="json", timeout=BOUND) as ch,
    ):
        assert [ch.recv(timeout=BOUND) for _ in range(3)] == [1, 2, 3]
        assert isinstance(ch, SseClientChannel)
        assert ch.last_event_id == "job-1"


def test_asyncio_events_without_an_id_of_their_own_are_not_duplicates(
    aio_run: AioRun,
) -> None:
    async def main() -> None:
        with one_answer(FOREIGN_HEAD + FOREIGN_BODY) as (url, _):
            async with await aio.connect(url, codec="json", timeout=BOUND) as ch:
                assert [await ch.recv(timeout=BOUND) for _ in range(3)] == [1, 2, 3]

    aio_run(main())
