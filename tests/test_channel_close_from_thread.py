"""close() of an asyncio channel from another thread than its event loop's (a worker thread,
a GUI thread, a signal handler's helper), while a task of the loop waits in recv(): on every
mechanism the close is handed to the loop, the waiting recv() gets ChannelClosed at once, and
nothing of the loop is touched from the other thread (the loop runs in debug mode, where
asyncio raises for that: "Non-thread-safe operation invoked on an event loop other than the
current one").

Before (a probe of every mechanism, this file's cases): shm's client recv() slept on until
its timeout; unix and tcp closed the transport from the other thread, which woke the recv()
only by luck and raised "Event loop is closed" in that thread when the loop had ended
meanwhile. ws, dbus, spool and signals had the same fault (their own tests); http, grpc, sse,
mq and udp were right already, and stay so here. The listener's close from another thread:
tests/test_listener_close_from_thread.py."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from pathlib import Path

import pytest
from tests._loops import AioRun

from ipcwire import aio
from ipcwire.errors import ChannelClosed

WAIT = 30.0  # the recv()'s own timeout: far longer than the close may take
BOUND = 5.0
_n = itertools.count()

# (scheme, which sides receive: the sse client only; a udp listener's side has a peer once
# the client has sent)
CASES = [
    (scheme, side)
    for scheme in ("unix", "tcp", "shm", "mq", "udp", "http", "grpc", "ws")
    for side in ("client", "server")
] + [("sse+http", "client"), ("fifo", "server")]  # (a FIFO's client only sends)


def _url(scheme: str, sock_dir: Path) -> str:
    return {
        "unix": f"unix://{sock_dir}/c.sock",
        "shm": f"shm://{sock_dir}/s.sock",
        "mq": f"mq:///iwthreadclose{os.getpid()}-{next(_n)}",
        "http": "http://127.0.0.1:0/api",
        "ws": "ws://127.0.0.1:0/ws",
        "sse+http": "sse+http://127.0.0.1:0/events",
        "fifo": f"fifo://{sock_dir}/f",
    }.get(scheme, f"{scheme}://127.0.0.1:0")


@pytest.mark.parametrize(("scheme", "side"), CASES)
def test_close_from_another_thread_wakes_a_waiting_recv(
    scheme: str, side: str, sock_dir: Path, aio_run: AioRun
) -> None:
    async def main() -> None:
        asyncio.get_running_loop().set_debug(True)  # (uvloop: checks nothing, runs as usual)
        async with await aio.listen(_url(scheme, sock_dir)) as lst:
            client = await aio.connect(lst.url, timeout=BOUND)
            if scheme == "udp":  # (the listener knows a peer once it has sent)
                await client.send(b"hello")
            server = await lst.accept(timeout=BOUND)
            if scheme == "udp":
                assert await server.recv(timeout=BOUND) == b"hello"
            ch, other = (client, server) if side == "client" else (server, client)
            try:
                receiving = asyncio.ensure_future(ch.recv(timeout=WAIT))
                await asyncio.sleep(0)  # (it waits now)
                errors: list[BaseException] = []

                def close() -> None:
                    try:
                        ch.close()
                    except BaseException as exc:
                        errors.append(exc)

                start = time.monotonic()
                closer = threading.Thread(target=close)
                closer.start()
                await asyncio.to_thread(closer.join, BOUND)
                with pytest.raises(ChannelClosed):
                    await asyncio.wait_for(receiving, BOUND)
                assert time.monotonic() - start < BOUND
                assert errors == []
                assert ch.closed
            finally:
                await ch.aclose()
                await other.aclose()

    aio_run(main())


def test_the_cases_cover_every_asyncio_channel_without_a_test_of_its_own() -> None:
    """ws (ws+unix), dbus, spool, signals, pipe, spawn and clipboard have their own tests of
    a close from another thread (tests/<mechanism>/); every other mechanism is here. (xpc:
    macOS only, a stand-in here.)"""
    from ipcwire.registry import mechanisms

    own = {"ws+unix", "dbus", "spool", "signal", "pipe", "spawn", "clipboard", "xpc"}
    here = {scheme for scheme, _ in CASES}
    missing = {m.scheme for m in mechanisms()} - here - own
    assert not missing, missing
