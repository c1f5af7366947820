"""What a WebSocket listener logs for its clients: the library's per-connection lines are
DEBUG (on ``ipcwire.ws.library``), each naming the endpoint's URL and, on the listener, the
peer; nothing names the private directory a ``ws+unix`` listener binds in. Before, the
``ipcwire`` logger got "connection open" and "connection closed" at INFO for every client,
naming nothing, and the asyncio ``ws+unix`` listener logged "server listening on
/tmp/.../.iwXXXX/s"."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio

CLIENTS = 3


def _url(kind: str, tmp_path: Path) -> str:
    return "ws://127.0.0.1:0/x" if kind == "tcp" else f"ws+unix://{tmp_path}/s.sock"


def _blocking(url: str) -> str:
    with ipcwire.listen(url) as lst:
        for _ in range(CLIENTS):
            with ipcwire.connect(lst.url, timeout=10) as c, lst.accept(timeout=10) as s:
                c.send(b"hi")
                assert s.recv(timeout=10) == b"hi"
        return lst.url


def _aio(url: str) -> str:
    async def main() -> str:
        async with await aio.listen(url) as lst:
            for _ in range(CLIENTS):
                c = await aio.connect(lst.url, timeout=10)
                s = await lst.accept(timeout=10)
                await c.send(b"hi")
                assert await s.recv(timeout=10) == b"hi"
                await c.aclose()
                await s.aclose()
            return lst.url

    return asyncio.run(main())


@pytest.mark.parametrize("api", ["blocking", "aio"])
@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_connection_lines_are_debug_and_name_the_endpoint_and_peer(
    api: str, kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ipcwire")
    url = (_blocking if api == "blocking" else _aio)(_url(kind, tmp_path))
    records = [r for r in caplog.records if r.name.startswith("ipcwire")]
    texts = [r.getMessage() for r in records]
    loud = [t for r, t in zip(records, texts, strict=True) if r.levelno >= logging.INFO]
    assert not loud, loud  # clean connections: nothing at INFO for an operator to wade through
    assert all(url in t for t in texts), [t for t in texts if url not in t][:5]
    assert not [t for t in texts if f"{tmp_path}/.iw" in t]  # the private bind directory
    peer = "127.0.0.1:" if kind == "tcp" else f"pid {os.getpid()}"
    for what in ("connection open", "connection closed"):
        lines = [t for t in texts if t.endswith(what)]
        assert len(lines) == CLIENTS, (what, lines)
        assert all(f"{url} ({peer}" in t for t in lines), lines
