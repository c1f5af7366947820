"""A connect to something that takes the connection and never speaks (an HTTP server on that
port, a socket nobody accepts on) ends in the same Timeout on both APIs, saying what is
likeliest: it may not be an ipcwire endpoint.

Before, the blocking API said "did not complete the handshake within 10 s" and the asyncio
one "connecting to tcp://... took over 10.0 s", neither hinting at a peer that is not ipcwire
(found by a newcomer walkthrough).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout

HINT = (
    r"took the connection but did not complete the ipcwire handshake within 0\.(3|29\d) s: "
    r"is it an ipcwire endpoint"
)


@pytest.fixture(params=["tcp", "unix"])
def silent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A listening socket that never accepts: the kernel takes connections for it."""
    if request.param == "tcp":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(tmp_path / "s.sock"))
        url = f"unix://{tmp_path}/s.sock"
    sock.listen(8)
    with sock:
        yield url


def test_blocking(silent: str) -> None:
    with pytest.raises(Timeout, match=HINT) as err:
        ipcwire.connect(silent, timeout=0.3)
    assert err.value.endpoint == silent


def test_asyncio(silent: str) -> None:
    async def main() -> None:
        with pytest.raises(Timeout, match=HINT) as err:
            await aio.connect(silent, timeout=0.3)
        assert err.value.endpoint == silent

    asyncio.run(main())
