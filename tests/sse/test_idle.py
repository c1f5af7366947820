"""A connection that brings nothing, not even a keepalive comment, is taken as dead.

A half-open TCP connection (the server's host gone, a NAT that forgot the connection, a frozen
server) never reports an error: without a limit the client waits forever. An ipcwire server
announces its keepalive interval (``X-Ipcwire-Keepalive``); the client drops a connection
that was silent for three of them and reconnects (resuming), giving up after ``retry_for``.
``idle_timeout=`` sets the limit for any server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from tests._proc import child, wait_line
from tests._threads import finished, in_thread

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, ConfigurationError, Timeout

SAFETY = 30.0  # a guard so that a broken build fails instead of hanging; never reached

SERVER = """
import sys, ipcwire
with ipcwire.listen("sse+http://127.0.0.1:0/events", keepalive=0.2) as lis:
    print(lis.url, flush=True)
    with lis.accept(timeout=30) as ch:
        ch.send(b"one")
        sys.stdin.readline()
"""


def test_a_frozen_server_breaks_the_channel_instead_of_hanging_it() -> None:
    """SIGSTOP: the server's kernel keeps the connection open, but nothing comes. Before, the
    client's recv() without a timeout waited forever."""
    with child(SERVER) as proc:
        url = wait_line(proc)
        with ipcwire.connect(url, timeout=1, retry_for=0.5) as ch:
            assert ch.recv(timeout=SAFETY) == b"one"
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                t, box = in_thread(ch.recv)
                assert finished(t), "recv() did not notice that nothing comes"
                assert isinstance(box[0], ChannelBroken)
                assert url in str(box[0])
            finally:
                os.kill(proc.pid, signal.SIGCONT)


def test_the_asyncio_client_finds_a_frozen_server() -> None:
    async def main(url: str, pid: int) -> None:
        async with await aio.connect(url, timeout=1, retry_for=0.5) as ch:
            assert await ch.recv(timeout=SAFETY) == b"one"
            os.kill(pid, signal.SIGSTOP)
            with pytest.raises(ChannelBroken):
                async with asyncio.timeout(SAFETY):
                    await ch.recv()

    with child(SERVER) as proc:
        try:
            asyncio.run(main(wait_line(proc), proc.pid))
        finally:
            os.kill(proc.pid, signal.SIGCONT)


def test_keepalives_keep_a_quiet_stream_alive(caplog: pytest.LogCaptureFixture) -> None:
    """No events for several times the limit: the keepalive comments count, so the client
    neither breaks nor reconnects."""
    caplog.set_level(logging.INFO, logger="ipcwire")
    with (
        ipcwire.listen("sse+http://127.0.0.1:0/events", keepalive=0.4) as lis,
        ipcwire.connect(lis.url, timeout=5) as ch,
        lis.accept(timeout=SAFETY) as server,
    ):
        server.send(b"first")
        assert ch.recv(timeout=SAFETY) == b"first"
        # The limit is 1.2 s (three intervals): a keepalive late by up to 0.8 s (a busy
        # machine, the server's thread in this process) does not break the stream.
        with pytest.raises(Timeout):
            ch.recv(timeout=1.8)  # half as long again as the limit
        server.send(b"second")
        assert ch.recv(timeout=SAFETY) == b"second"
    assert not [r for r in caplog.records if "lost the event stream" in r.getMessage()]


@contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server that is not ipcwire: it answers with an event stream, then never writes
    again (and announces no keepalive interval)."""
    lsock = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        lsock.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            conn.recv(65536)
            conn.sendall(
                b'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: "hello"\n\n'
            )

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"sse+http://127.0.0.1:{lsock.getsockname()[1]}/events", conns
    finally:
        stop.set()
        t.join(SAFETY)
        lsock.close()
        for c in conns:
            c.close()


def test_idle_timeout_applies_to_any_server() -> None:
    with silent_server() as (url, conns):
        with ipcwire.connect(url, codec="json", timeout=5) as ch:  # no interval announced
            assert ch.recv(timeout=SAFETY) == "hello"
            with pytest.raises(Timeout):
                ch.recv(timeout=0.5)
            assert len(conns) == 1
        with ipcwire.connect(url, codec="json", timeout=5, idle_timeout=0.2, retry=0.01) as ch:
            assert ch.recv(timeout=SAFETY) == "hello"
            # the silent connection was dropped, and the new one says hello again
            assert ch.recv(timeout=SAFETY) == "hello"
            assert len(conns) == 3


def test_idle_timeout_is_checked() -> None:
    with silent_server() as (url, _):
        for bad in (0, -1, float("nan"), "soon"):
            with pytest.raises(ConfigurationError, match="idle_timeout="):
                ipcwire.connect(url, timeout=5, idle_timeout=bad)
