"""gRPC review (rev-grpc): a unary=True client whose server goes away and comes back."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from pathlib import Path

import pytest
from tests._threads import BOUND, finished, in_thread

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel
from ipcwire.errors import ChannelBroken, ConnectionRefused


def _echo(ch: Channel) -> None:
    for msg in ch:
        ch.send(msg)


@pytest.mark.parametrize("where", ["grpc://127.0.0.1:0", "grpc+unix"])
def test_a_unary_call_to_a_server_that_went_away_is_refused(where: str, sock_dir: Path) -> None:
    """Once a unary client had made a call, a later call to a server that had gone away said
    ChannelBroken ('<url> answered UNAVAILABLE: failed to connect to all addresses ...'): no
    server answered, nothing of the call was sent, and a first call in the same situation
    was ConnectionRefused with the fix. Both drivers."""
    url = f"grpc+unix://{sock_dir}/u.sock" if where == "grpc+unix" else where
    with ipcwire.listen(url) as lis:
        t = threading.Thread(target=lis.serve, args=(_echo,), daemon=True)
        t.start()
        client = ipcwire.connect(lis.url, unary=True)
        assert client.request(b"one", timeout=BOUND) == b"one"

        async def first() -> aio.AioChannel:
            ch = await aio.connect(lis.url, unary=True)
            assert await ch.request(b"one", timeout=BOUND) == b"one"
            return ch

        loop = asyncio.new_event_loop()
        aclient = loop.run_until_complete(first())
    t.join(BOUND)
    try:
        with pytest.raises(ConnectionRefused) as info:
            client.request(b"two", timeout=BOUND)
        assert info.value.endpoint == lis.url and "nothing is listening" in str(info.value)
        with pytest.raises(ConnectionRefused) as info:
            loop.run_until_complete(aclient.request(b"two", timeout=BOUND))
        assert info.value.endpoint == lis.url and "nothing is listening" in str(info.value)
    finally:
        client.close()
        loop.run_until_complete(aclient.aclose())
        loop.close()


def _blocking_call(url: str, done: threading.Event) -> BaseException | None:
    with ipcwire.connect(url, unary=True) as ch:
        try:
            ch.request(b"x", timeout=BOUND)
        except BaseException as exc:
            done.wait(BOUND)  # the channel stays open meanwhile
            return exc
    return None


def _asyncio_call(url: str, done: threading.Event) -> BaseException | None:
    async def main() -> BaseException | None:
        async with await aio.connect(url, unary=True) as ch:
            try:
                await ch.request(b"x", timeout=BOUND)
            except BaseException as exc:
                await asyncio.to_thread(done.wait, BOUND)
                return exc
        return None

    return asyncio.run(main())


@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_a_unary_client_tries_to_reconnect_at_least_every_second(driver: str) -> None:
    """grpcio waits 1.6 times longer before each new attempt to reconnect, up to 120 s: a
    unary client whose server had been down a while kept failing (ConnectionRefused) for that
    long after the server was back (measured: >10 s after a 30 s outage). Now at most 1 s, as
    ipcwire's own retries. Seen from a TCP port that accepts each attempt and hangs up at
    once: before, the gaps between attempts were about 1, 1.6 and 2.6 s."""
    srv = socket.create_server(("127.0.0.1", 0))
    url = f"grpc://127.0.0.1:{srv.getsockname()[1]}"
    done = threading.Event()
    call = _blocking_call if driver == "blocking" else _asyncio_call
    t, box = in_thread(lambda: call(url, done))  # its call fails: the port hangs up
    try:
        with srv:
            srv.settimeout(BOUND)
            times = []
            for _ in range(4):
                conn, _addr = srv.accept()
                times.append(time.monotonic())
                conn.close()
                srv.settimeout(2.0)  # (an attempt that does not come raises TimeoutError)
    finally:
        done.set()
    assert finished(t)
    assert isinstance(box[0], (ChannelBroken, ConnectionRefused)), box  # (reset or hung up)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    assert max(gaps) < 2.0, gaps
