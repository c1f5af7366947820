"""The reconnection budget (``retry_for=``) is reset by progress, not by a bare 200.

A server (or a proxy in front of it) that answers every request with a 200 event-stream head
and then closes before any event: each answer reset the budget's clock, so the client
reconnected for ever and ``recv()`` without a timeout never returned. Now only a message
received resets it: such a server exhausts ``retry_for`` and ``recv()`` raises
``ChannelBroken`` naming the URL and what is wrong. A server that brings a new event on each
connection still resumes (``Last-Event-ID``) for as long as it does.

The servers are written by hand on raw sockets, in a thread of the test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken

BOUND = 10.0  # what recv() may take; before the fix it reached this (Timeout)
SID = "cd" * 16
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nX-Ipcwire-Stream: " + SID.encode() + b"\r\n\r\n"
)
RETRY = 0.02  # the client's first reconnection delay
RETRY_FOR = 0.3


@contextmanager
def raw_server(answer: Callable[[bytes], bytes]) -> Iterator[tuple[str, list[bytes]]]:
    """A server that reads each request, writes ``answer(request)`` and closes the
    connection; yields its URL and the list of requests it got."""
    srv = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return  # closed: the test is over
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                requests.append(request)
                conn.sendall(answer(request))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"sse+http://127.0.0.1:{srv.getsockname()[1]}/events", requests
    finally:
        srv.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() alone does not)
        t.join(BOUND)
        srv.close()


def head_only(request: bytes) -> bytes:
    return HEAD


def check_given_up(err: ChannelBroken, url: str, requests: list[bytes]) -> None:
    text = str(err)
    assert url in text and err.endpoint == url, text
    assert "retry_for=" in text, text
    assert "ended each stream before its first event" in text, text
    assert len(requests) >= 3  # it did reconnect, while the budget lasted


def test_a_server_that_answers_and_closes_exhausts_retry_for() -> None:
    with (
        raw_server(head_only) as (url, requests),
        ipcwire.connect(url, timeout=BOUND, retry=RETRY, retry_for=RETRY_FOR) as ch,
    ):
        with pytest.raises(ChannelBroken) as info:
            ch.recv(timeout=BOUND)
        check_given_up(info.value, url, requests)


def test_asyncio_a_server_that_answers_and_closes_exhausts_retry_for(aio_run: AioRun) -> None:
    async def main() -> None:
        with raw_server(head_only) as (url, requests):
            async with await aio.connect(
                url, timeout=BOUND, retry=RETRY, retry_for=RETRY_FOR
            ) as ch:
                with pytest.raises(ChannelBroken) as info:
                    await ch.recv(timeout=BOUND)
                check_given_up(info.value, url, requests)

    aio_run(main())


def one_more_event(request: bytes) -> bytes:
    """The event after the request's Last-Event-ID (the first without one), then close."""
    last = 0
    for line in request.split(b"\r\n"):
        if line.lower().startswith(b"last-event-id:"):
            last = int(line.split(b"-")[-1])
    event = f"id: {SID}-{last + 1}\ndata: {last + 1}\n\n".encode()
    return HEAD + f"{len(event):x}\r\n".encode() + event + b"\r\n"


# Events enough that the time spent reconnecting between them (at least RETRY each, and
# each connection's own time) is well past RETRY_FOR_PROGRESS in all.
EVENTS = 12
RETRY_FOR_PROGRESS = 0.1


def test_each_event_received_resets_the_budget() -> None:
    """One event per connection, resumed from the last one: the budget is per stretch
    without progress, so the client keeps going past retry_for in all."""
    with (
        raw_server(one_more_event) as (url, requests),
        ipcwire.connect(
            url, codec="json", timeout=BOUND, retry=RETRY, retry_for=RETRY_FOR_PROGRESS
        ) as ch,
    ):
        assert [ch.recv(timeout=BOUND) for _ in range(EVENTS)] == list(range(1, EVENTS + 1))
        assert f"Last-Event-ID: {SID}-{EVENTS - 1}".encode() in requests[EVENTS - 1]


def test_asyncio_each_event_received_resets_the_budget(aio_run: AioRun) -> None:
    async def main() -> None:
        with raw_server(one_more_event) as (url, _):
            async with await aio.connect(
                url, codec="json", timeout=BOUND, retry=RETRY, retry_for=RETRY_FOR_PROGRESS
            ) as ch:
                got = [await ch.recv(timeout=BOUND) for _ in range(EVENTS)]
                assert got == list(range(1, EVENTS + 1))

    aio_run(main())
