"""A plain client at a TLS server, and a TLS client at a plain server, are told so: tcp://
(ssl=) and http:// / https://, blocking and asyncio, on loopback. Before, nothing said TLS:
tcp 'broke while handshaking with it: the peer reset the connection ...' and
'[SSL: UNEXPECTED_EOF_WHILE_READING] ...' (asyncio: 'broke while connecting to it: ', no
words at all); http 'Server disconnected without sending a response' and https
'[SSL: WRONG_VERSION_NUMBER] wrong version number'; ws 'did not receive a valid HTTP response;
is it a WebSocket endpoint?' and wss (asyncio) 'broke while connecting to it: '."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.ws._tls import tls_contexts

import ipcwire
from ipcwire import aio


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return tls_contexts(Path(tmp_path_factory.mktemp("tls")))


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    # (listeners log the client they dropped; not what is tested here)
    caplog.set_level(logging.CRITICAL, logger="ipcwire")
    yield


def both_errors(url: str, **kw: Any) -> list[ipcwire.IpcwireError]:
    """The error of connect(url) on each API."""
    errors = []
    with pytest.raises(ipcwire.IpcwireError) as info:
        ipcwire.connect(url, timeout=3, **kw)
    errors.append(info.value)

    async def main() -> None:
        await aio.connect(url, timeout=3, **kw)

    with pytest.raises(ipcwire.IpcwireError) as info:
        asyncio.run(main())
    errors.append(info.value)
    return errors


def test_tcp_plain_client_at_a_tls_server(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, _ = contexts
    with ipcwire.listen("tcp://127.0.0.1:0", ssl=server) as lst:
        for err in both_errors(lst.url):
            assert isinstance(err, ipcwire.ChannelBroken), err
            assert "or the server serves TLS: then pass ssl=" in str(err), err
            assert lst.url in str(err)


def test_tcp_tls_client_at_a_plain_server(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    _, client = contexts
    with ipcwire.listen("tcp://127.0.0.1:0") as lst:
        for err in both_errors(lst.url, ssl=client):
            assert isinstance(err, ipcwire.ChannelBroken), err
            assert "does not seem to speak TLS" in str(err), err
            assert "connect without ssl=" in str(err)
            assert lst.url in str(err)


def test_http_plain_client_at_an_https_server(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, _ = contexts
    with ipcwire.listen("https://127.0.0.1:0/api", ssl=server) as lst:
        plain = lst.url.replace("https:", "http:", 1)
        for err in both_errors(plain):
            assert isinstance(err, ipcwire.ChannelBroken), err
            assert f"or the server serves TLS: then connect to {lst.url}" in str(err), err


def test_https_client_at_an_http_server(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    _, client = contexts
    with ipcwire.listen("http://127.0.0.1:0/api") as lst:
        tls = lst.url.replace("http:", "https:", 1)
        for err in both_errors(tls, ssl=client):
            assert isinstance(err, ipcwire.ChannelBroken), err
            assert "does not seem to speak TLS" in str(err), err
            assert f"connect to {lst.url} without ssl=" in str(err), err


def test_ws_plain_client_at_a_wss_server(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, _ = contexts
    with ipcwire.listen("wss://127.0.0.1:0/app", ssl=server) as lst:
        plain = lst.url.replace("wss:", "ws:", 1)
        for err in both_errors(plain):
            assert f"or the server serves TLS: then connect to {lst.url}" in str(err), err


def test_wss_client_at_a_ws_server(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    _, client = contexts
    with ipcwire.listen("ws://127.0.0.1:0/app") as lst:
        tls = lst.url.replace("ws:", "wss:", 1)
        for err in both_errors(tls, ssl=client):
            assert isinstance(err, ipcwire.ChannelBroken), err
            assert "does not seem to speak TLS" in str(err), err
            assert f"connect to {lst.url} without ssl=" in str(err), err
            assert "()" not in str(err)
