"""What the blocking and asyncio WebSocket drivers share, without sockets: connect's and
listen's checks, the listener's settings (its real URL), and the client's reading of the
server's welcome header (``ws/_common.py``, ``ws/_admission.py``)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Response

from ipcwire._core.handshake import ServerHandshake
from ipcwire._core.url import parse_url
from ipcwire.errors import AuthenticationFailed, ConfigurationError
from ipcwire.options import ChannelOptions
from ipcwire.ws._admission import ServerSettings, listen_address
from ipcwire.ws._common import (
    FRAMING,
    WELCOME_HEADER,
    client_handshake,
    connect_address,
    strip_frame,
    welcome_step,
)


def options(url: str, **kw: Any) -> ChannelOptions:
    return ChannelOptions.build(parse_url(url), kw)


def test_connect_checks_its_options_and_the_scheme_before_any_io() -> None:
    ep = parse_url("ws://127.0.0.1:9/app")
    assert connect_address(ep, {}, None).uri() == "ws://127.0.0.1:9/app"
    with pytest.raises(ConfigurationError, match="unknown option"):
        connect_address(ep, {"nope": 1}, None)
    ctx = ssl.create_default_context()
    with pytest.raises(ConfigurationError, match=r"ssl= is for wss:// URLs, not ws://"):
        connect_address(ep, {}, ctx)
    assert connect_address(parse_url("wss://127.0.0.1:9/app"), {}, ctx).secure


def test_listen_needs_ssl_exactly_for_wss() -> None:
    with pytest.raises(ConfigurationError, match="needs ssl=SSLContext"):
        listen_address(parse_url("wss://127.0.0.1:0/app"), {}, None)
    with pytest.raises(ConfigurationError, match="listen at wss://"):
        listen_address(parse_url("ws://127.0.0.1:0/app"), {}, ssl.create_default_context())
    with pytest.raises(ConfigurationError, match="unknown option"):
        listen_address(parse_url("ws://127.0.0.1:0/app"), {"timeout": 1}, None)


def test_settings_carry_the_port_the_listener_got() -> None:
    url = "ws://127.0.0.1:0/app"
    addr = listen_address(parse_url(url), {}, None)
    common: dict[str, Any] = {
        "origins": None,
        "pages": None,
        "ping_interval": None,
        "ping_timeout": None,
        "close_timeout": 1.0,
    }
    settings = ServerSettings.build(addr, 4321, options(url), compression=None, **common)
    assert settings.url == settings.options.url == "ws://127.0.0.1:4321/app"
    assert settings.path == "/app"
    with pytest.raises(ConfigurationError, match=r"ws://127.0.0.1:4321/app is None or 'deflate'"):
        ServerSettings.build(addr, 4321, options(url), compression="gzip", **common)


def test_client_headers_put_the_hello_first_then_the_callers() -> None:
    hs, extra = client_handshake(options("ws://h:1/"), {"X-Mine": "1"})
    assert list(extra) == ["X-Ipcwire-Hello", "X-Mine"]
    assert hs.framing == FRAMING


def test_without_a_welcome_the_send_limit_is_this_sides_max_frame() -> None:
    hs, _ = client_handshake(options("ws://h:1/", max_frame=1000), None)
    assert welcome_step(hs, None, "ws://h:1/").done
    assert welcome_step(hs, Response(101, "Switching", Headers()), "ws://h:1/").done
    assert hs.peer_max_frame == 1000
    with_token, _ = client_handshake(options("ws://h:1/", token="t"), None)
    with pytest.raises(AuthenticationFailed, match="not an ipcwire WebSocket endpoint"):
        welcome_step(with_token, None, "ws://h:1/")


def test_a_welcome_sets_the_send_limit_to_the_servers_max_frame() -> None:
    hs, extra = client_handshake(options("ws://h:1/", max_frame=1000), None)
    server = ServerHandshake(codec="bytes", framing=FRAMING, max_frame=77, token=None)
    welcome = strip_frame(server.receive(extra["X-Ipcwire-Hello"].encode()).send)
    response = Response(101, "Switching", Headers([(WELCOME_HEADER, welcome)]))
    assert welcome_step(hs, response, "ws://h:1/").done
    assert hs.peer_max_frame == 77
