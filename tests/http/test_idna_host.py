"""An http:// or https:// host that httpx's strict IDNA check refuses (an emoji, full-width
letters) is InvalidURL at connect(), naming the URL, the host and why, as listen() says it.

Before, connect let httpx's own ``httpx.InvalidURL: Invalid IDNA hostname: '🎉.example'``
escape (not an IpcwireError, not ipcwire's InvalidURL), blocking and asyncio."""

from __future__ import annotations

import asyncio

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import InvalidURL

# (URL, the host's ASCII form the message suggests)
URLS = [
    ("http://🎉.example:80/x", "xn--dk8h.example"),
    ("http://\uff21\uff22\uff23.example/x", "abc.example"),  # full-width ABC
    ("https://🎉.example/x", "xn--dk8h.example"),
    ("http://a.🎉.example:8080", "a.xn--dk8h.example"),
]


def _check(err: InvalidURL, url: str, ascii_host: str) -> None:
    text = str(err)
    assert isinstance(err, ValueError)
    assert url in text and "IDNA" in text and f"{ascii_host!r}" in text, text
    assert err.endpoint == url, err.endpoint


@pytest.mark.parametrize(("url", "ascii_host"), URLS)
def test_blocking_connect(url: str, ascii_host: str) -> None:
    with pytest.raises(InvalidURL) as info:
        ipcwire.connect(url, timeout=2)
    _check(info.value, url, ascii_host)


@pytest.mark.parametrize(("url", "ascii_host"), URLS)
def test_asyncio_connect(url: str, ascii_host: str) -> None:
    async def main() -> InvalidURL:
        with pytest.raises(InvalidURL) as info:
            await aio.connect(url, timeout=2)
        return info.value

    _check(asyncio.run(main()), url, ascii_host)


def test_a_host_httpx_takes_still_connects() -> None:
    with ipcwire.listen("http://localhost:0/x", codec="json") as lst:
        c = ipcwire.connect(lst.url, codec="json", timeout=5)
        with c, lst.accept(timeout=5) as s:
            c.send("é")
            assert s.recv(timeout=5) == "é"
