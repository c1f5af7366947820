"""An ``http://`` connect does not load a CA bundle: httpx made a new SSL context (certifi's
bundle, about 20 ms here) for every transport it was not given one, though a plain connection
never uses it: that was most of a connect's cost (23 ms for connect, one request and close;
3.5 ms now), and 200 clients connecting at once took 4.6 s. ipcwire now makes the default
context once per process. Counted, not timed: calls of ``ssl.create_default_context`` while
connecting (traced with ``sys.setprofile``, this thread only)."""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import ipcwire
from ipcwire import aio


@contextmanager
def _contexts_made() -> Iterator[list[int]]:
    made = [0]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is ssl.create_default_context.__code__:
            made[0] += 1

    sys.setprofile(profile)
    try:
        yield made
    finally:
        sys.setprofile(None)


def test_http_connects_share_one_default_ssl_context() -> None:
    with ipcwire.listen("http://127.0.0.1:0/x") as lst:
        threading.Thread(target=lst.serve, args=(lambda ch: [ch.send(m) for m in ch],)).start()

        def five() -> None:
            for _ in range(5):
                with ipcwire.connect(lst.url, timeout=10) as ch:
                    assert ch.request(b"x", timeout=10) == b"x"

        five()  # (the first connect of the process may make it)
        with _contexts_made() as made:
            five()
        assert made[0] == 0  # before: 5


def test_asyncio_http_connects_share_one_default_ssl_context() -> None:
    async def echo(ch: Any) -> None:
        async for m in ch:
            await ch.send(m)

    async def main() -> int:
        async with await aio.listen("http://127.0.0.1:0/x") as lst:
            serving = asyncio.ensure_future(lst.serve(echo))

            async def five() -> None:
                for _ in range(5):
                    async with await aio.connect(lst.url, timeout=10) as ch:
                        assert await ch.request(b"x", timeout=10) == b"x"

            await five()
            with _contexts_made() as made:
                await five()
            serving.cancel()
            return made[0]

    assert asyncio.run(main()) == 0  # before: 5
