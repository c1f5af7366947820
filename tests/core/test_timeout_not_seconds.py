"""A ``timeout=`` that is not a number ("1") is ConfigurationError naming it, on the paths
that added it to the clock before ``_deadline.limit()`` could see it (a bare TypeError
before): the blocking stream receive (unix, tcp, fifo), fifo sends (blocking and asyncio),
http clients (blocking and asyncio), mq asyncio receives. The channel goes on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError

BAD = "1"
NOT_SECONDS = r"^timeout='1'( for \S+)? is not a number of seconds \(str\)"


def _url(scheme: str, tmp_path: Path) -> str:
    return {
        "unix": f"unix://{tmp_path}/s.sock",
        "tcp": "tcp://127.0.0.1:0",
        "fifo": f"fifo://{tmp_path}/f",
        "http": "http://127.0.0.1:0/t",
        "mq": f"mq:///ipcwire-t{os.getpid()}",
    }[scheme]


SCHEMES = ["unix", "tcp", "fifo", "http", "mq"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_blocking(scheme: str, tmp_path: Path) -> None:
    with (
        ipcwire.listen(_url(scheme, tmp_path)) as server,
        ipcwire.connect(server.url, timeout=5) as client,
        server.accept(timeout=5) as peer,
    ):
        receiver = peer if scheme == "fifo" else client  # (fifo: one way, client to server)
        with pytest.raises(ConfigurationError, match=NOT_SECONDS):
            receiver.recv(timeout=BAD)  # type: ignore[arg-type]
        if scheme in ("unix", "tcp", "fifo"):  # (http and mq queue a send: it does not wait)
            with pytest.raises(ConfigurationError, match=NOT_SECONDS):
                client.send(b"x", timeout=BAD)  # type: ignore[arg-type]
        if scheme == "http":  # (its own request(): refused before anything is sent)
            with pytest.raises(ConfigurationError, match=NOT_SECONDS):
                client.request(b"x", timeout=BAD)  # type: ignore[arg-type]
        client.send(b"ok", timeout=5)  # the channel goes on: nothing was half-sent or lost
        assert peer.recv(timeout=5) == b"ok"
        if scheme != "fifo":
            peer.send(b"back", timeout=5)
            assert client.recv(timeout=5) == b"back"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_asyncio(scheme: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            await aio.listen(_url(scheme, tmp_path)) as server,
            await aio.connect(server.url, timeout=5) as client,
        ):
            peer = await server.accept(timeout=5)
            receiver = peer if scheme == "fifo" else client
            with pytest.raises(ConfigurationError, match=NOT_SECONDS):
                await receiver.recv(timeout=BAD)  # type: ignore[arg-type]
            if scheme == "fifo":  # (the others' send of a small message does not wait)
                with pytest.raises(ConfigurationError, match=NOT_SECONDS):
                    await client.send(b"x", timeout=BAD)  # type: ignore[arg-type]
            if scheme == "http":  # (its own request(): refused before anything is sent)
                with pytest.raises(ConfigurationError, match=NOT_SECONDS):
                    await client.request(b"x", timeout=BAD)  # type: ignore[arg-type]
            await client.send(b"ok", timeout=5)
            assert await peer.recv(timeout=5) == b"ok"
            if scheme != "fifo":
                await peer.send(b"back", timeout=5)
                assert await client.recv(timeout=5) == b"back"
            await peer.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("bad", [BAD, float("nan")])
@pytest.mark.parametrize("scheme", ["unix", "tcp"])
def test_a_request_with_a_bad_timeout_sends_nothing(
    scheme: str, bad: object, tmp_path: Path
) -> None:
    """request(timeout="1") sent the request, then raised: the peer got a request whose reply
    nobody waited for (helper-146). Now it fails before anything is sent, both APIs."""
    url = "tcp://127.0.0.1:0" if scheme == "tcp" else f"unix://{tmp_path}/r.sock"
    with ipcwire.listen(url) as lst, ipcwire.connect(lst.url, timeout=5) as client:
        peer = lst.accept(timeout=5)
        with peer:
            with pytest.raises(ConfigurationError):
                client.request(b"x", timeout=bad)  # type: ignore[arg-type]
            client.send(b"first")
            assert peer.recv(timeout=5) == b"first"  # nothing came before it

    async def main() -> None:
        alst = await aio.listen(url)
        async with alst, await aio.connect(alst.url, timeout=5) as ch:
            apeer = await alst.accept(timeout=5)
            async with apeer:
                with pytest.raises(ConfigurationError):
                    await ch.request(b"x", timeout=bad)  # type: ignore[arg-type]
                await ch.send(b"first")
                assert await apeer.recv(timeout=5) == b"first"

    asyncio.run(main())
