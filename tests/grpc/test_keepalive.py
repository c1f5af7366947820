"""gRPC dead peers and slow readers: keepalive pings find a frozen (SIGSTOP) or killed
(SIGKILL) peer process and report ``ChannelBroken``; a peer that stops reading makes the
blocking ``send()`` wait and time out, with nothing lost or cut in half."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, ConfigurationError, Timeout
from ipcwire.grpc._channel import HIGH_WATER
from ipcwire.grpc._keepalive import Keepalive

# Short, so that a frozen peer is found fast.
KA: dict[str, Any] = {"keepalive": 0.2, "keepalive_timeout": 0.5}
SAFETY = 30.0  # only so that a broken build fails instead of hanging; never reached if it works

SERVER = """
import sys, ipcwire
with ipcwire.listen("grpc://127.0.0.1:0", keepalive=0.2, keepalive_timeout=0.5) as lis:
    print(lis.url, flush=True)
    with lis.accept(timeout=30) as ch:
        for m in ch:
            ch.send(m)
"""

CLIENT = """
import sys, ipcwire
with ipcwire.connect(sys.argv[1], keepalive=0.2, keepalive_timeout=0.5) as ch:
    ch.send(b"hello")
    for m in ch:
        pass
"""


@contextmanager
def child(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A Python child process; killed (and continued, if stopped) and reaped at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        proc.kill()  # SIGKILL ends a stopped process too
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL])
def test_client_finds_a_dead_or_frozen_server(sig: signal.Signals) -> None:
    with child(SERVER) as proc, ipcwire.connect(_url(proc), **KA) as ch:
        assert ch.request(b"ping", timeout=10) == b"ping"
        os.kill(proc.pid, sig)
        with pytest.raises(ChannelBroken) as err:
            ch.recv()  # no timeout: only keepalive (or the closed socket) can end this
        if sig == signal.SIGSTOP:
            assert "keepalive" in str(err.value)
        with pytest.raises(ChannelBroken):
            ch.send(b"more", timeout=SAFETY)


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL])
def test_server_finds_a_dead_or_frozen_client(sig: signal.Signals) -> None:
    with (
        ipcwire.listen("grpc://127.0.0.1:0", **KA) as lis,
        child(CLIENT, lis.url) as proc,
        lis.accept(timeout=SAFETY) as ch,
    ):
        assert ch.recv(timeout=SAFETY) == b"hello"
        os.kill(proc.pid, sig)
        with pytest.raises(ChannelBroken):
            ch.recv()
        with pytest.raises(ChannelBroken):
            ch.send(b"more", timeout=SAFETY)


def test_asyncio_client_finds_a_frozen_server() -> None:
    async def main(url: str, pid: int) -> None:
        async with await aio.connect(url, **KA) as ch:
            assert await ch.request(b"ping", timeout=10) == b"ping"
            os.kill(pid, signal.SIGSTOP)
            with pytest.raises(ChannelBroken, match="keepalive"):
                await ch.recv()

    with child(SERVER) as proc:
        asyncio.run(main(_url(proc), proc.pid))


# 64 B fills grpcio's own windows with tens of thousands of messages first: ~20 s, a soak
@pytest.mark.parametrize("size", [64 * 1024, pytest.param(64, marks=pytest.mark.slow)])
def test_send_waits_for_a_peer_that_does_not_read(size: int) -> None:
    """The peer reads nothing: send() queues a bounded amount, then times out with the
    message unsent; when the peer reads, it gets every sent message whole, in order. Small
    messages are bounded by count too, not only by their few bytes."""
    with (
        ipcwire.listen("grpc://127.0.0.1:0") as lis,
        ipcwire.connect(lis.url) as cl,
        lis.accept(timeout=SAFETY) as sv,
    ):
        for sender, reader in ((cl, sv), (sv, cl)):
            sent = 0
            with pytest.raises(Timeout, match="not reading"):
                while True:
                    sender.send(sent.to_bytes(4, "big") * (size // 4), timeout=0.5)
                    sent += 1
                    assert sent * size < 16 * HIGH_WATER, "send() never waited"
                    # ipcwire holds at most HIGH_WATER_MESSAGES on each side (without that
                    # bound, 4 MiB of 64 B messages: 65536 on each); grpcio's own HTTP/2
                    # windows hold some tens of thousands more, not ipcwire's to bound
                    assert sent < 100_000, "small messages piled up"
            got: list[bytes] = []
            while len(got) < sent:
                got.extend(reader.recv_many(timeout=SAFETY))
            assert got == [i.to_bytes(4, "big") * (size // 4) for i in range(sent)]
            sender.send(b"after", timeout=SAFETY)
            assert reader.recv(timeout=SAFETY) == b"after"


def test_keepalive_options() -> None:
    with pytest.raises(ConfigurationError, match="keepalive"):
        ipcwire.connect("grpc://127.0.0.1:1", keepalive="soon")
    with pytest.raises(ConfigurationError, match="keepalive_timeout"):
        ipcwire.listen("grpc://127.0.0.1:0", keepalive_timeout=0)
    with pytest.raises(ConfigurationError, match="keepalive, keepalive_timeout"):
        ipcwire.connect("grpc://127.0.0.1:1", keepalive_every=1)
    # NaN passed every check (then ValueError from int()), infinity OverflowError
    bad: list[dict[str, Any]] = [{"keepalive": float("nan")}, {"keepalive_timeout": float("nan")}]
    for kw in bad:
        with pytest.raises(ConfigurationError, match="keepalive") as err:
            ipcwire.listen("grpc://127.0.0.1:0", **kw)
        assert err.value.endpoint == "grpc://127.0.0.1:0"
    with ipcwire.listen("grpc://127.0.0.1:0", keepalive=float("inf")) as lis:
        assert lis.url.startswith("grpc://")  # (pings as rarely as grpcio allows)
    off = dict(Keepalive(None).client_options())
    assert off["grpc.keepalive_time_ms"] == 2**31 - 1
    on = dict(Keepalive(3.0, 1.5).server_options())
    assert on["grpc.keepalive_time_ms"] == 3000
    assert on["grpc.keepalive_timeout_ms"] == on["grpc.http2.ping_timeout_ms"] == 1500
    assert on["grpc.http2.max_pings_without_data"] == 0
    assert on["grpc.http2.min_ping_interval_without_data_ms"] <= 1000
    # The URL's query gives the defaults.
    with ipcwire.listen("grpc://127.0.0.1:0?keepalive=0&keepalive_timeout=2") as lis:
        assert lis.url.startswith("grpc://")


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL])
def test_asyncio_server_finds_a_dead_or_frozen_client(sig: signal.Signals) -> None:
    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0", **KA) as lis:
            with child(CLIENT, lis.url) as proc:
                async with await lis.accept(timeout=SAFETY) as ch:
                    assert await ch.recv(timeout=SAFETY) == b"hello"
                    os.kill(proc.pid, sig)
                    # grpc.aio ends the request stream of a lost client as it ends a closed
                    # one (and says nothing more once the handler has returned); the client's
                    # goodbye missing from its end tells them apart (it was EndOfChannel).
                    with pytest.raises(ChannelBroken, match="went away"):
                        await ch.recv()
                    with pytest.raises(ChannelBroken):
                        await ch.send(b"more", timeout=SAFETY)

    asyncio.run(main())
