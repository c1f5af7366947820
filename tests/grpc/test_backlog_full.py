"""A grpc+unix listener whose backlog is full is a busy server, as for unix://: connect()
tries again until its timeout, then raises Timeout saying the server is not accepting, the
same on both APIs. Before, both said 'ConnectionRefused nothing is listening at
grpc+unix://...: start the server first' at once (grpcio takes the EAGAIN of a full backlog
for a connect in progress, then fails it: 'Transport endpoint is not connected')."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout

TIMEOUT = 0.3
Full = tuple[str, socket.socket, list[socket.socket]]


@pytest.fixture
def full(sock_dir: Path) -> Iterator[Full]:
    """A listening socket nobody accepts on, its backlog filled by clients."""
    path = str(sock_dir / "full.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    fillers: list[socket.socket] = []
    try:
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            fillers.append(s)
            try:
                s.connect(path)
            except BlockingIOError:
                break
        else:
            raise AssertionError("the backlog never filled")
        fillers.pop().close()  # the one that found it full
        yield f"grpc+unix://{path}", srv, fillers
    finally:
        for s in fillers:
            s.close()
        srv.close()


def _check(err: BaseException | None, url: str, took: float) -> None:
    assert isinstance(err, Timeout), repr(err)
    assert str(err).startswith(
        f"the server at {url} is not accepting connections: its listen "
        f"backlog stayed full for {TIMEOUT:g} s"
    ), str(err)
    assert took >= TIMEOUT * 0.9  # it waited for its timeout, not failing at once
    assert took < TIMEOUT + 2


def test_blocking_connect_waits_then_says_the_server_is_busy(full: Full) -> None:
    url = full[0]
    start = time.monotonic()
    err: BaseException | None = None
    try:
        ipcwire.connect(url, timeout=TIMEOUT).close()
    except BaseException as exc:
        err = exc
    _check(err, url, time.monotonic() - start)


def test_asyncio_connect_waits_then_says_the_server_is_busy(aio_run: AioRun, full: Full) -> None:
    url = full[0]

    async def main() -> tuple[BaseException | None, float]:
        start = time.monotonic()
        try:
            (await aio.connect(url, timeout=TIMEOUT)).close()
        except BaseException as exc:
            return exc, time.monotonic() - start
        return None, time.monotonic() - start

    err, took = aio_run(main())
    _check(err, url, took)


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_connect_goes_in_once_the_server_accepts(api: str, full: Full) -> None:
    """Room in the backlog lets the waiting connect in: the server reads its HTTP/2 preface."""
    url, srv, fillers = full
    result: list[BaseException | None] = []

    def client() -> None:
        connect: Callable[[], Any]
        if api == "blocking":
            connect = lambda: ipcwire.connect(url, timeout=10).close()  # noqa: E731
        else:

            async def aconnect() -> None:
                (await aio.connect(url, timeout=10)).close()

            connect = lambda: asyncio.run(aconnect())  # noqa: E731
        try:
            connect()
            result.append(None)
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=client)
    t.start()
    srv.settimeout(10)
    for _ in fillers:
        srv.accept()[0].close()
    while True:  # (the connections that tell a busy server from none end at once)
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            first = conn.recv(4)
        if first:
            break
    assert first == b"PRI "  # the waiting client's HTTP/2 preface
    t.join(10)
    assert result and not isinstance(result[0], Timeout), result
