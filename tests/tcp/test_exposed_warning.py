"""A TCP listener that takes connections from other machines with neither a token nor TLS
logs one warning naming its URL and the fix; on loopback, or with a token or TLS, nothing.
Before, ``listen("tcp://0.0.0.0:0")`` said nothing (docs/mechanisms/tcp.md asks for a token
and TLS there). Both APIs; the listeners are real (bound to every interface)."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio


def _listen_both(url: str, aio_run: AioRun, **kw: Any) -> list[str]:
    """Listen at ``url`` with each API; the real URL each got."""
    urls = []
    with ipcwire.listen(url, **kw) as lst:
        urls.append(lst.url)

    async def main() -> None:
        async with await aio.listen(url, **kw) as alst:
            urls.append(alst.url)

    aio_run(main())
    return urls


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ipcwire" and r.levelno == logging.WARNING
    ]


def test_listening_on_every_interface_without_token_or_tls_warns(
    caplog: pytest.LogCaptureFixture, aio_run: AioRun
) -> None:
    with caplog.at_level(logging.WARNING, logger="ipcwire"):
        urls = _listen_both("tcp://0.0.0.0:0", aio_run)
    said = _warnings(caplog)
    assert len(said) == 2, said  # one per listener
    for url, text in zip(urls, said, strict=True):
        assert url.startswith("tcp://0.0.0.0:") and url in text
        assert "no token and no TLS" in text
        assert "token=" in text and "ssl=" in text and "127.0.0.1" in text


@pytest.mark.parametrize(
    ("url", "kw"),
    [
        ("tcp://127.0.0.1:0", {}),
        ("tcp://localhost:0", {}),
        ("tcp://:0", {}),  # (no host: 127.0.0.1)
        ("tcp://0.0.0.0:0", {"token": "s3cret"}),
        ("tcp://0.0.0.0:0", {"ssl": ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)}),
    ],
)
def test_loopback_or_a_token_or_tls_log_nothing(
    url: str, kw: dict[str, Any], caplog: pytest.LogCaptureFixture, aio_run: AioRun
) -> None:
    with caplog.at_level(logging.WARNING, logger="ipcwire"):
        _listen_both(url, aio_run, **kw)
    assert _warnings(caplog) == []
