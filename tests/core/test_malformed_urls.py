"""A malformed URL is InvalidURL naming it, on every scheme and both APIs: never urllib's bare
ValueError ("Invalid IPv6 URL"), os's "embedded null byte" or the idna codec's UnicodeError."""

from __future__ import annotations

import asyncio

import pytest

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url

# (URL, words its message must hold)
MALFORMED = [
    ("tcp://[::1:80", "malformed host"),
    ("tcp://[", "malformed host"),
    ("tcp://]", "malformed host"),
    ("tcp://[zz]:80", "malformed host"),
    ("unix://[::1:80", "malformed host"),
    ("spool://[::1:80", "malformed host"),
    ("ws://[::1:80/", "malformed host"),
    ("tcp://h\x00:80", "control character"),
    ("tcp://a b:80", "space"),
    ("fifo:///tmp/a%00b", "NUL"),
    ("spool:///tmp/a%00b", "NUL"),
    ("spool:@%00", "NUL"),
    ("tcp://\udcff:80", "not valid text"),
    ("mq://\udcff:80", "not valid text"),
    ("tcp://" + "a" * 64 + ":80", "not a valid host name"),
    ("tcp://a..b:80", "not a valid host name"),
]


@pytest.mark.parametrize(("url", "words"), MALFORMED)
def test_connect_blocking(url: str, words: str) -> None:
    with pytest.raises(ipcwire.InvalidURL) as info:
        ipcwire.connect(url, timeout=1)
    assert words in str(info.value)
    assert (url if url.isprintable() else ascii(url)[1:-1])[:10] in str(info.value)


@pytest.mark.parametrize(("url", "words"), MALFORMED)
def test_connect_asyncio(url: str, words: str) -> None:
    async def go() -> None:
        await aio.connect(url, timeout=1)

    with pytest.raises(ipcwire.InvalidURL) as info:
        asyncio.run(go())
    assert words in str(info.value)


@pytest.mark.parametrize("url", ["tcp://[::1:80", "spool:///tmp/a%00b", "tcp://\udcff:0"])
def test_listen_both_apis(url: str) -> None:
    with pytest.raises(ipcwire.InvalidURL):
        ipcwire.listen(url)

    async def go() -> None:
        await aio.listen(url)

    with pytest.raises(ipcwire.InvalidURL):
        asyncio.run(go())


def test_still_parsed() -> None:
    """What was valid stays valid: IPv6 literals, an abstract socket's name, escapes."""
    assert parse_url("tcp://[::1]:7000").host == "::1"
    assert parse_url("unix:@a%00b").path == "@a\0b"
    assert parse_url("unix:///tmp/%C3%BC.sock").path == "/tmp/ü.sock"
    assert parse_url("tcp://bücher.example:80").host == "bücher.example"
