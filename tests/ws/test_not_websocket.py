"""``ws://`` pointed at something that is not a WebSocket endpoint says so, with what answered
and the fix, at once: an ``sse+http://`` listener's 401 was "AuthenticationFailed ... this
event stream requires a token" though a token was passed, and an open event stream a
handshake Timeout. A WebSocket server's own 401 is still AuthenticationFailed. Both APIs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import AuthenticationFailed, IpcwireError, RemoteProtocolError


def _ws_url(url: str) -> str:
    """The same host, port and path, as ws://."""
    return "ws://" + url.split("://", 1)[1]


def _both(url: str, **kw: Any) -> list[IpcwireError]:
    """What connecting raises, blocking and asyncio."""
    errors: list[IpcwireError] = []
    with pytest.raises(IpcwireError) as info:
        ipcwire.connect(url, timeout=5, **kw)
    errors.append(info.value)

    async def main() -> None:
        with pytest.raises(IpcwireError) as info:
            await aio.connect(url, timeout=5, **kw)
        errors.append(info.value)

    asyncio.run(main())
    return errors


def _check(errors: list[IpcwireError], url: str, *words: str) -> None:
    for err in errors:
        assert isinstance(err, RemoteProtocolError), repr(err)
        text = str(err)
        assert "not a WebSocket endpoint" in text and url in text, text
        assert "scheme and port" in text, text
        for w in words:
            assert w in text, text


@pytest.mark.parametrize("token", ["s3cret", None])
def test_an_event_stream_that_wants_a_token(token: str | None) -> None:
    with ipcwire.listen("sse+http://127.0.0.1:0/ev", token="s3cret") as lst:
        url = _ws_url(lst.url)
        _check(_both(url, token=token), url, "HTTP 401")


def test_an_open_event_stream_is_recognised_at_once() -> None:
    with ipcwire.listen("sse+http://127.0.0.1:0/ev") as lst:
        url = _ws_url(lst.url)
        t0 = time.monotonic()
        errors = _both(url)
        assert time.monotonic() - t0 < 5  # (not the handshake timeout, twice)
        _check(errors, url, "HTTP 200", "text/event-stream", "sse+http://")


def test_an_http_endpoint() -> None:
    with ipcwire.listen("http://127.0.0.1:0/api") as lst:
        url = _ws_url(lst.url)
        _check(_both(url), url, "HTTP 405", "POST")


@pytest.mark.parametrize(
    "listen", [ipcwire.listen, lambda url, **kw: asyncio.run(_aio_listener_401(url, **kw))]
)
def test_a_websocket_servers_401_is_still_authentication_failed(
    listen: Callable[..., Any],
) -> None:
    if listen is ipcwire.listen:
        with ipcwire.listen("ws://127.0.0.1:0/x", token="s3cret") as lst:
            errors = _both(lst.url)
    else:
        errors = listen("ws://127.0.0.1:0/x", token="s3cret")
    for err in errors:
        assert isinstance(err, AuthenticationFailed), repr(err)
        assert "not a WebSocket endpoint" not in str(err)


async def _aio_listener_401(url: str, **kw: Any) -> list[IpcwireError]:
    """The asyncio listener refusing a client without the token (blocking client in a
    thread, asyncio client here)."""
    errors: list[IpcwireError] = []
    async with await aio.listen(url, **kw) as lst:

        def blocking() -> None:
            with pytest.raises(IpcwireError) as info:
                ipcwire.connect(lst.url, timeout=5)
            errors.append(info.value)

        await asyncio.to_thread(blocking)
        with pytest.raises(IpcwireError) as info:
            await aio.connect(lst.url, timeout=5)
        errors.append(info.value)
    return errors
