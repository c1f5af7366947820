"""Bad input is a typed error naming the endpoint (fresh review).

* ``ping_interval=0`` sent pings back to back for the channel's life (a whole CPU, both
  APIs); a string or NaN killed the keepalive thread with a traceback; ``close_timeout=None``
  was a bare TypeError at a blocking connect; ``compression="gzip"`` at a client was blamed on
  the server ("is it a WebSocket endpoint?"). Now each is ``ConfigurationError`` naming the
  option, the value and the endpoint, before anything is sent.
* An ``Origin`` header that is no URL (``http://[``, which any client may send) made both
  listeners answer 500 and log an ERROR traceback (``urlsplit``'s ValueError); it is refused
  with 403 like any other foreign origin, and the listener goes on serving.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from typing import Any

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError, PermissionDenied

URL = "ws://127.0.0.1:0/app"

BAD = [
    {"ping_interval": 0},
    {"ping_interval": -1},
    {"ping_interval": "5"},
    {"ping_interval": float("nan")},
    {"ping_timeout": 0},
    {"ping_timeout": True},
    {"close_timeout": -1},
    {"close_timeout": None},
    {"close_timeout": float("nan")},
]


def _says(err: ConfigurationError, option: dict[str, Any], url: str) -> None:
    (name,) = option
    assert f"{name}=" in str(err) and url in str(err), err


@pytest.mark.parametrize("option", BAD, ids=repr)
def test_bad_timings_are_refused_by_connect_and_listen(option: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        ipcwire.listen(URL, **option)
    _says(info.value, option, "ws://127.0.0.1:")
    with ipcwire.listen(URL) as listener:
        with pytest.raises(ConfigurationError) as info:
            ipcwire.connect(listener.url, timeout=5, **option)
        _says(info.value, option, listener.url)


@pytest.mark.parametrize("option", BAD, ids=repr)
def test_bad_timings_are_refused_on_asyncio(option: dict[str, Any], aio_run: AioRun) -> None:
    async def main() -> None:
        with pytest.raises(ConfigurationError) as info:
            await aio.listen(URL, **option)
        _says(info.value, option, "ws://127.0.0.1:")
        async with await aio.listen(URL) as listener:
            with pytest.raises(ConfigurationError) as info:
                await aio.connect(listener.url, timeout=5, **option)
            _says(info.value, option, listener.url)

    aio_run(main())


def test_a_client_compression_that_does_not_exist_is_its_own_error(aio_run: AioRun) -> None:
    with (
        ipcwire.listen(URL) as listener,
        pytest.raises(ConfigurationError, match="or 'deflate', not 'gzip'"),
    ):
        ipcwire.connect(listener.url, timeout=5, compression="gzip")

    async def main() -> None:
        async with await aio.listen(URL) as listener:
            with pytest.raises(ConfigurationError, match="or 'deflate', not 'gzip'"):
                await aio.connect(listener.url, timeout=5, compression="gzip")

    aio_run(main())


def test_good_timings_still_work() -> None:
    with (
        ipcwire.listen(URL, ping_interval=None, close_timeout=0) as listener,
        ipcwire.connect(listener.url, timeout=5, ping_interval=5, ping_timeout=1.5) as ch,
        listener.accept(timeout=5) as server,
    ):
        ch.send(b"x")
        assert server.recv(timeout=5) == b"x"


def _raw_upgrade(url: str, origin: str) -> bytes:
    """The status line of the answer to an upgrade request with ``Origin: origin``."""
    host, port = url.split("//")[1].split("/", 1)[0].rsplit(":", 1)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET /app HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {origin}\r\n\r\n".encode()
        )
        got = b""
        while b"\r\n" not in got:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    return got.split(b"\r\n", 1)[0]


MALFORMED = ["http://[", "http://[::1", "https://[x]:1"]


def _no_error_records(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("origin", MALFORMED)
def test_a_malformed_origin_is_refused_not_an_internal_error(
    origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    with ipcwire.listen(URL) as listener:
        assert _raw_upgrade(listener.url, origin).split(b" ")[1] == b"403"
        with pytest.raises(PermissionDenied, match="may not use"):
            ipcwire.connect(listener.url, timeout=5, origin=origin)
        with (  # the others are still served
            ipcwire.connect(listener.url, timeout=5) as ch,
            listener.accept(timeout=5) as server,
        ):
            ch.send(b"x")
            assert server.recv(timeout=5) == b"x"
    _no_error_records(caplog)


@pytest.mark.parametrize("origin", MALFORMED)
def test_a_malformed_origin_is_refused_on_asyncio(
    origin: str, aio_run: AioRun, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with await aio.listen(URL) as listener:
            status = await asyncio.to_thread(_raw_upgrade, listener.url, origin)
            assert status.split(b" ")[1] == b"403"
            with pytest.raises(PermissionDenied, match="may not use"):
                await aio.connect(listener.url, timeout=5, origin=origin)
            async with (
                await aio.connect(listener.url, timeout=5) as ch,
                await listener.accept(timeout=5) as server,
            ):
                await ch.send(b"x")
                assert await server.recv(timeout=5) == b"x"

    aio_run(main())
    _no_error_records(caplog)


def test_a_malformed_origin_in_the_allow_list_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="is not an origin"):
        ipcwire.listen(URL, origins=["http://["])
