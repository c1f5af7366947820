"""A host name the idna codec refuses (a part over 63 characters, an empty part: a..b) is
InvalidURL naming the URL and what is wrong, as tcp:// says it (6ff4ad2), on udp://, ws://,
wss://, sse+http(s):// and http(s):// (before, http raised the codec's UnicodeError, blocking,
and ChannelBroken "Name or service not known", asyncio), both APIs, listen and connect; never
the codec's UnicodeError."""

from __future__ import annotations

import asyncio

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import InvalidURL

LONG = "a" * 64
URLS = [
    f"udp://{LONG}:7000",
    "udp://a..b:7000",
    f"ws://{LONG}:7000/x",
    "ws://a..b:7000/x",
    f"wss://{LONG}:7000/x",
    f"sse+http://{LONG}:7000/x",
    "sse+http://x.a..b:7000/x",
    f"sse+https://{LONG}:7000/x",
    f"http://{LONG}:7000/x",
    "http://a..b:7000/x",
    f"https://{LONG}:7000/x",
    "https://x.a..b:8443/x",
]


def _check(exc: InvalidURL, url: str) -> None:
    text = str(exc)
    assert url in text
    assert "is not a valid host name" in text
    assert "1 to 63 characters" in text
    assert exc.endpoint == url


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("how", ["connect", "listen"])
def test_blocking(url: str, how: str) -> None:
    with pytest.raises(InvalidURL) as info:
        if how == "connect":
            ipcwire.connect(url, timeout=1)
        else:
            ipcwire.listen(url)
    _check(info.value, url)


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("how", ["connect", "listen"])
def test_asyncio(url: str, how: str) -> None:
    async def main() -> None:
        if how == "connect":
            await aio.connect(url, timeout=1)
        else:
            await aio.listen(url)

    with pytest.raises(InvalidURL) as info:
        asyncio.run(main())
    _check(info.value, url)
