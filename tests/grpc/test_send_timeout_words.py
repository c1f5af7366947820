"""A send whose timeout passes says the network may be the cause, not only the peer.

Before, behind a silent partition every send timeout blamed the peer: ws "the peer is not
reading (312234 bytes wait for it)", grpc "is not reading: 64 messages ... wait", http "is
not taking messages", while the peer was reading and the link had stopped carrying data. Now
they say "... or the network is not carrying the data (a partition, a slow link)".
(ws, http and grpc; blocking and asyncio for ws, whose asyncio words are its own.)
"""

from __future__ import annotations

import asyncio
import re

import pytest
from tests.ws.test_request_timeout_partition import echo_behind_partition

import ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout

CHUNK = b"x" * 256 * 1024
WORDS = r"the network is not carrying (the data|them)[ :(]+a partition, a slow link"


def _fill_blocking(ch: ipcwire.Channel) -> Timeout:
    for _ in range(400):  # 100 MiB at most: the kernel's buffers on loopback hold far less
        try:
            ch.send(CHUNK, timeout=0.2)
        except Timeout as exc:
            return exc
    raise AssertionError("no send timed out behind the partition")


@pytest.mark.parametrize(("scheme", "path"), [("ws", "/x"), ("http", "/api"), ("grpc", "")])
def test_blocking_send_timeout_names_the_network(scheme: str, path: str) -> None:
    with (
        echo_behind_partition(scheme, path, codec="bytes") as (part, url),
        ipcwire.connect(url, codec="bytes", timeout=5) as ch,
    ):
        assert ch.request(b"hi", timeout=5) == b"hi"
        part.part()
        exc = _fill_blocking(ch)
        assert f"{scheme}://127.0.0.1:{part.port}" in str(exc)
        assert exc.endpoint is not None
        assert re.search(WORDS, str(exc)), str(exc)
        part.close()


def test_asyncio_ws_send_timeout_names_the_network() -> None:
    with echo_behind_partition("ws", "/x", codec="bytes") as (part, url):

        async def main() -> str:
            ch = await aio.connect(url, codec="bytes", timeout=5)
            try:
                assert await ch.request(b"hi", timeout=5) == b"hi"
                part.part()
                for _ in range(400):
                    try:
                        await ch.send(CHUNK, timeout=0.2)
                    except Timeout as exc:
                        return str(exc)
                raise AssertionError("no send timed out behind the partition")
            finally:
                part.close()
                await ch.aclose()

        text = asyncio.run(main())
        assert re.search(WORDS, text), text
