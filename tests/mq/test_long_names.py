"""Queue names up to the longest a listener can take: its lock file
(``ipcwire-mq.<name>.lock``) must fit in a file name of 255 bytes, so an mq channel's queue
name has at most 239 bytes after its '/'. Longer ones are InvalidURL before anything is made,
with both drivers, instead of 'ChannelBroken ... File name too long' from listen()."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import InvalidURL

from .conftest import PREFIX


def _name(length: int) -> str:
    """A fresh queue name of ``length`` bytes after the '/'."""
    base = f"{PREFIX[1:]}-long-"
    return "/" + base + "n" * (length - len(base))


def test_the_longest_name_a_listener_takes_works_end_to_end() -> None:
    url = "mq://" + _name(239)
    box: list[object] = []
    with ipcwire.listen(url) as lst:
        t = threading.Thread(target=lambda: box.append(ipcwire.connect(url, timeout=5)))
        t.start()
        with lst.accept(timeout=5) as server:
            t.join(10)
            [client] = box
            assert isinstance(client, ipcwire.Channel)
            with client:
                client.send(b"hi")
                assert server.recv(timeout=5) == b"hi"
    assert not os.path.exists("/dev/mqueue" + _name(239))


@pytest.mark.parametrize("length", [240, 250, 254])
def test_a_longer_name_is_an_invalid_url_with_both_drivers(length: int) -> None:
    url = "mq://" + _name(length)
    for call in (lambda: ipcwire.listen(url), lambda: ipcwire.connect(url, timeout=1)):
        with pytest.raises(InvalidURL, match="239 bytes"):
            call()

    async def main() -> None:
        with pytest.raises(InvalidURL, match="239 bytes"):
            await aio.listen(url)
        with pytest.raises(InvalidURL, match="239 bytes"):
            await aio.connect(url, timeout=1)

    asyncio.run(main())
    assert not os.path.exists("/dev/mqueue" + _name(length))
