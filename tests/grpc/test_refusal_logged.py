"""A gRPC listener logs the clients it refuses (a wrong codec, a wrong or missing token) as
the unix, tcp and ws listeners do: a WARNING naming the listener, the client and why,
bounded (a flood is counted in one line). It logged nothing before: the client was told, the
server's operator never knew. Blocking and asyncio listeners, stream and unary calls."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import AuthenticationFailed, HandshakeError

TOKEN = b"right-token"


def _refusals(caplog: pytest.LogCaptureFixture, url: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith(f"{url} refused a client")
    ]


def _check(lines: list[str], url: str) -> None:
    assert len(lines) == 4, lines
    codec = [m for m in lines if "HandshakeError" in m]
    token = [m for m in lines if "AuthenticationFailed" in m]
    assert len(codec) == 2 and len(token) == 2, lines
    assert all("codec='json'" in m and "'msgpack'" in m for m in codec), codec
    assert all("token" in m for m in token), token
    assert all("(127.0.0.1:" in m for m in lines), lines  # the client's address


ATTEMPTS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"codec": "msgpack", "token": TOKEN}, HandshakeError),
    ({"codec": "json", "token": b"wrong-token"}, AuthenticationFailed),
]


def test_blocking_listener_logs_refusals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    with ipcwire.listen("grpc://127.0.0.1:0", codec="json", token=TOKEN) as lst:
        for unary in (False, True):
            for kw, err in ATTEMPTS:
                with (
                    pytest.raises(err),
                    ipcwire.connect(lst.url, timeout=5, unary=unary, **kw) as ch,
                ):
                    ch.request(1, timeout=5)
        _check(_refusals(caplog, lst.url), lst.url)


def test_asyncio_listener_logs_refusals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")

    async def main() -> str:
        async with await aio.listen("grpc://127.0.0.1:0", codec="json", token=TOKEN) as lst:
            for unary in (False, True):
                for kw, err in ATTEMPTS:
                    with pytest.raises(err):
                        ch = await aio.connect(lst.url, timeout=5, unary=unary, **kw)
                        async with ch:
                            await ch.request(1, timeout=5)
            return lst.url

    url = asyncio.run(main())
    _check(_refusals(caplog, url), url)


def test_a_flood_of_refusals_is_counted_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    with ipcwire.listen("grpc://127.0.0.1:0", codec="json", token=TOKEN) as lst:
        url = lst.url
        with ipcwire.connect(url, codec="json", timeout=5, unary=True, token=b"wrong") as ch:
            for _ in range(12):
                with pytest.raises(AuthenticationFailed):
                    ch.request(1, timeout=5)
    assert len(_refusals(caplog, url)) == 5  # one by one; the rest counted at close
    counted = [r.getMessage() for r in caplog.records if "not logged one by one" in r.getMessage()]
    assert len(counted) == 1 and "7 more" in counted[0], counted
