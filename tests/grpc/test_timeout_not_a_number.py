"""A timeout= that is not a number ("1", a list) on a gRPC channel is ConfigurationError
naming the option, the value and the channel, both APIs; the channel stays usable.

Before, the blocking driver raised a bare TypeError ("unsupported operand type(s) for +:
'float' and 'str'") from recv(), recv_many(), accept(), and send() once it had to wait for
room; the asyncio driver's error did not name the channel.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError, Timeout

BOUND = 10.0
BAD = ["1", [1]]


def _refused(url: str, bad: Any) -> Any:
    return pytest.raises(
        ConfigurationError, match="^" + re.escape(f"timeout={bad!r} for {url} is not a number")
    )


@pytest.mark.parametrize("bad", BAD)
def test_blocking(bad: Any) -> None:
    with ipcwire.listen("grpc://127.0.0.1:0") as lst:
        with _refused(lst.url, bad):
            lst.accept(timeout=bad)
        with ipcwire.connect(lst.url, timeout=BOUND) as client, lst.accept(timeout=BOUND) as server:
            for ch in (client, server):
                with _refused(ch.url, bad):
                    ch.recv(timeout=bad)
                with _refused(ch.url, bad):
                    ch.recv_many(timeout=bad)
            # a sender that has to wait for room (the server reads nothing meanwhile)
            big = b"x" * (256 * 1024)
            sent = 0
            with pytest.raises(Timeout):
                for _ in range(1000):
                    client.send(big, timeout=0)
                    sent += 1
            with _refused(client.url, bad):
                client.send(big, timeout=bad)
            with _refused(client.url, bad):
                client.send_many([big], timeout=bad)
            # nothing half-done: every message sent arrives, then the next ones
            got = 0
            while got < sent:
                got += len(server.recv_many(timeout=BOUND))
            assert got == sent
            client.send(b"more", timeout=BOUND)
            assert server.recv(timeout=BOUND) == b"more"
            server.send(b"back", timeout=BOUND)
            assert client.recv(timeout=BOUND) == b"back"


@pytest.mark.parametrize("bad", BAD)
def test_asyncio(bad: Any) -> None:
    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0") as lst:
            accepting = asyncio.ensure_future(lst.accept(timeout=BOUND))
            async with (
                await aio.connect(lst.url, timeout=BOUND) as client,
                await accepting as server,
            ):
                for ch in (client, server):
                    with _refused(ch.url, bad):
                        await ch.recv(timeout=bad)
                    with _refused(ch.url, bad):
                        await ch.recv_many(timeout=bad)
                    with pytest.raises(Timeout, match="yet"):
                        await ch.recv(timeout=0)  # (now through the reader task)
                    with _refused(ch.url, bad):
                        await ch.recv(timeout=bad)
                await client.send(b"more")
                assert await server.recv(timeout=BOUND) == b"more"
                await server.send(b"back")
                assert await client.recv(timeout=BOUND) == b"back"

    asyncio.run(main())
