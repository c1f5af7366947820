"""listen(backlog=) and a WebSocket client's headers=/origin= are checked before anything is
opened, with a ConfigurationError naming the value and the endpoint. Before: backlog="x" or
2.5 was a bare TypeError from the socket, backlog=-5 and backlog=True were taken without a
word (unix, tcp, ws alike); a CR/LF in a header or in origin= was refused by the library
mid-handshake and reported as the server's fault ("is it a WebSocket endpoint?"), and
headers=5 was a bare TypeError."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError


@pytest.mark.parametrize("scheme", ["unix", "tcp", "ws"])
@pytest.mark.parametrize("backlog", ["x", -5, 2.5, True])
def test_a_backlog_that_is_not_a_count_is_refused(
    scheme: str, backlog: Any, sock_dir: Path
) -> None:
    url = {"unix": f"unix://{sock_dir}/b.sock", "tcp": "tcp://127.0.0.1:0"}.get(
        scheme, "ws://127.0.0.1:0/b"
    )
    with pytest.raises(ConfigurationError, match="backlog=") as err:
        ipcwire.listen(url, backlog=backlog).close()
    assert err.value.endpoint == url

    async def main() -> None:
        (await aio.listen(url, backlog=backlog)).close()

    with pytest.raises(ConfigurationError, match="backlog="):
        asyncio.run(main())


def test_a_backlog_as_text_or_zero_is_a_count(sock_dir: Path) -> None:
    for backlog in ("16", 0):
        with (
            ipcwire.listen(f"unix://{sock_dir}/z.sock", backlog=backlog) as lst,
            ipcwire.connect(lst.url, timeout=5) as ch,
            lst.accept(timeout=5) as peer,
        ):
            ch.send(b"x")
            assert peer.recv(timeout=5) == b"x"


BAD_HEADERS: list[dict[str, Any]] = [
    {"headers": {"X-Agent": "a\r\nInjected: yes"}},
    {"headers": {"Bad Name": "v"}},
    {"headers": 5},
    {"origin": "http://a\r\nb"},
]


@pytest.mark.parametrize("kw", BAD_HEADERS)
def test_a_header_that_http_cannot_carry_is_the_callers_error(kw: dict[str, Any]) -> None:
    with ipcwire.listen("ws://127.0.0.1:0/h") as lst:
        with pytest.raises(ConfigurationError, match="header") as err:
            ipcwire.connect(lst.url, timeout=5, **kw).close()
        assert err.value.endpoint == lst.url

        async def main() -> None:
            (await aio.connect(lst.url, timeout=5, **kw)).close()

        with pytest.raises(ConfigurationError, match="header"):
            asyncio.run(main())
        with (  # (the listener serves the next client)
            ipcwire.connect(lst.url, timeout=5, headers={"X-Agent": "planner"}) as ch,
            lst.accept(timeout=5) as peer,
        ):
            ch.send(b"ok")
            assert peer.recv(timeout=5) == b"ok"
