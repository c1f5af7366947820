"""A bad option value is ConfigurationError naming the option, the value and what is
accepted: never a bare TypeError, int()'s words without the option's name, or a value taken
as it is (reconnect=-3 "kept trying for -3 s", reconnect=nan retrying for ever)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import ipcwire
from ipcwire import aio

REFUSED = "tcp://127.0.0.1:1"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("reconnect", -3),
        ("reconnect", float("nan")),
        ("reconnect", "soon"),
        ("max_frame", "big"),
        ("max_frame", 1.5),
        ("handshake_timeout", "x"),
        ("handshake_timeout", -1),
    ],
)
def test_connect_option(option: str, value: Any) -> None:
    kw = {option: value}
    with pytest.raises(ipcwire.ConfigurationError, match=rf"^{option}=") as info:
        ipcwire.connect(REFUSED, timeout=1, **kw)
    assert REFUSED in str(info.value)

    async def go() -> None:
        await aio.connect(REFUSED, timeout=1, **kw)

    with pytest.raises(ipcwire.ConfigurationError, match=rf"^{option}="):
        asyncio.run(go())


def test_query_reconnect() -> None:
    with pytest.raises(ipcwire.ConfigurationError, match=r"^reconnect=nan"):
        ipcwire.connect(REFUSED + "?reconnect=nan", timeout=1)


def test_whole_float_max_frame_still_accepted() -> None:
    with (
        ipcwire.listen("tcp://127.0.0.1:0", max_frame=2.0**20) as server,  # type: ignore[arg-type]
        ipcwire.connect(server.url, max_frame="4096", timeout=5) as ch,  # type: ignore[arg-type]
    ):
        assert ch is not None


@pytest.mark.parametrize("bad", ["1", [1], b"1"])
def test_tcp_timeout_not_a_number(bad: Any) -> None:
    with ipcwire.listen("tcp://127.0.0.1:0") as server:
        with ipcwire.connect(server.url, timeout=5) as ch, server.accept(timeout=5) as peer:
            with pytest.raises(ipcwire.ConfigurationError, match=r"^timeout=.*not a number"):
                ch.send(b"x", timeout=bad)
            ch.send(b"ok", timeout=5)  # the channel is fine: nothing was half-sent
            assert peer.recv(timeout=5) == b"ok"

        async def go() -> None:
            async with await aio.connect(server.url, timeout=5) as ach:
                with pytest.raises(ipcwire.ConfigurationError, match=r"^timeout="):
                    await ach.recv(timeout=bad)

        asyncio.run(go())


@pytest.mark.parametrize("bad", ["1", [1]])
def test_spool_timeout_not_a_number(tmp_path: Path, bad: Any) -> None:
    url = f"spool://{tmp_path}/q"
    with ipcwire.listen(url) as server, server.accept(timeout=5) as reader:
        with pytest.raises(ipcwire.ConfigurationError, match=rf"^timeout=.* for {url}"):
            reader.recv(timeout=bad)

        async def go() -> None:
            async with await aio.connect(url) as ach:
                with pytest.raises(ipcwire.ConfigurationError, match=r"^timeout="):
                    await ach.recv(timeout=bad)

        asyncio.run(go())
