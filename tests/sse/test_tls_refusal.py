"""An sse+https server whose certificate the client does not trust, or that names another
host, is AuthenticationFailed (the server did not prove who it is) with the fix, as for
wss://, https:// and tcp+TLS, on both APIs. It was ChannelBroken ("TLS handshake ...
failed: [SSL: CERTIFICATE_VERIFY_FAILED] ...") with no fix before. Other TLS failures (a
server that does not speak TLS) stay ChannelBroken."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun
from tests.ws._tls import tls_contexts

import ipcwire
from ipcwire import aio
from ipcwire.errors import AuthenticationFailed, ChannelBroken

URL = "sse+https://127.0.0.1:0/secure"
FIX = "cafile="


def _cases(client_ctx: ssl.SSLContext) -> list[tuple[dict[str, Any], str]]:
    """Connect options that fail verification, and what the message says of it."""
    return [
        ({}, "self-signed certificate"),  # the system's CAs do not trust it
        ({"ssl": client_ctx, "server_hostname": "example.org"}, "Hostname mismatch"),
    ]


def _check(exc: BaseException, url: str, why: str) -> str:
    assert isinstance(exc, AuthenticationFailed), repr(exc)
    text = str(exc)
    assert url in text
    assert "not trusted" in text
    assert why in text
    assert FIX in text
    assert "server_hostname=" in text
    return text.replace(url, "URL")


def test_blocking_untrusted_certificate_is_authentication_failed(tmp_path: Path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    with ipcwire.listen(URL, ssl=server_ctx, codec="json") as listener:
        for options, why in _cases(client_ctx):
            with pytest.raises(AuthenticationFailed) as info:
                ipcwire.connect(listener.url, codec="json", timeout=5, **options)
            _check(info.value, listener.url, why)


def test_asyncio_untrusted_certificate_is_authentication_failed(
    tmp_path: Path, aio_run: AioRun
) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)

    async def main() -> None:
        async with await aio.listen(URL, ssl=server_ctx, codec="json") as listener:
            for options, why in _cases(client_ctx):
                with pytest.raises(AuthenticationFailed) as info:
                    await aio.connect(listener.url, codec="json", timeout=5, **options)
                _check(info.value, listener.url, why)

    aio_run(main())


def test_a_server_without_tls_is_still_channel_broken(aio_run: AioRun) -> None:
    with ipcwire.listen("sse+http://127.0.0.1:0/plain") as listener:
        url = listener.url.replace("sse+http://", "sse+https://")
        with pytest.raises(ChannelBroken, match="TLS handshake"):
            ipcwire.connect(url, timeout=5)

        async def main() -> None:
            with pytest.raises(ChannelBroken, match="TLS handshake"):
                await aio.connect(url, timeout=5)

        aio_run(main())
