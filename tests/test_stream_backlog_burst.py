"""unix:// and tcp:// listeners keep the clients past their handshake within backlog=, on both
APIs, when many clients arrive at once from another process. Before, the blocking acceptor
checked for room only before a pass that accepted up to 64 clients and queued every one that
finished its handshake, and the asyncio listener counted only the channels already queued:
with backlog=3 and a burst of clients at a server that never calls accept(), 97 of 100
connected (each holding a descriptor and a 256 KiB buffer in the server). Now a client whose
handshake ends while the backlog is full waits for its place with its welcome unsent, so its
connect() times out as at a full kernel backlog."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio

BACKLOG = 3
CLIENTS = 40

# connects CLIENTS clients at once (each with a 1 s timeout) and prints how many connected
_BURST = textwrap.dedent(
    """
    import asyncio, sys
    from ipcwire import aio

    async def one():
        try:
            return await aio.connect(sys.argv[1], timeout=1.0)
        except Exception as exc:
            return exc

    async def main():
        got = await asyncio.gather(*(one() for _ in range(int(sys.argv[2]))))
        chans = [c for c in got if not isinstance(c, Exception)]
        errors = {type(c).__name__ for c in got if isinstance(c, Exception)}
        print(len(chans), sorted(errors), flush=True)
        for c in chans:
            await c.aclose()

    asyncio.run(main())
    """
)


def _args(url: str) -> list[str]:
    return [sys.executable, "-c", _BURST, url, str(CLIENTS)]


def _check(out: str) -> None:
    connected, errors = out.split(" ", 1)
    assert int(connected) == BACKLOG, out
    assert errors.strip() == "['Timeout']", out


@pytest.fixture(params=["unix", "tcp"])
def url(
    request: pytest.FixtureRequest, unix_url: Callable[[], str], tcp_url: Callable[[], str]
) -> str:
    return unix_url() if request.param == "unix" else tcp_url()


def test_blocking_listener_keeps_a_burst_within_backlog(url: str) -> None:
    with ipcwire.listen(url, backlog=BACKLOG) as server:
        out = subprocess.run(
            _args(server.url), capture_output=True, text=True, timeout=30, check=True
        ).stdout
    _check(out)


def test_asyncio_listener_keeps_a_burst_within_backlog(url: str, aio_run: AioRun) -> None:
    async def main() -> str:
        async with await aio.listen(url, backlog=BACKLOG) as server:
            proc = await asyncio.create_subprocess_exec(
                *_args(server.url), stdout=asyncio.subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0
            return out.decode()

    _check(aio_run(main()))
