"""A shared-memory listener logs a refused client as unix:// does, at the same level and in
the same words: a client with another token "refused this server at the token proof: it most
likely has a different token=" (WARNING, naming its pid); one refused by the handshake
"URL refused a client (pid, uid): why" (WARNING). Before, both were INFO "URL dropped a
client: the peer closed the connection during the setup" or "...: why". A client that just
goes is still an INFO line, naming it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

import pytest
from tests._loops import AioRun
from tests._proc import wait_until

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.errors import AuthenticationFailed, HandshakeError
from ipcwire.shm._naming import socket_path

TOKEN = "a" * 16


def _lines(caplog: pytest.LogCaptureFixture, url: str) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if url in r.getMessage()]


def _expected(url: str) -> list[tuple[int, str]]:
    me = os.getpid()
    uid = os.getuid()
    return [
        (
            logging.WARNING,
            f"the client of {url} (pid {me} uid {uid}) refused this server at the token proof: "
            f"it most likely has a different token= (the proof of this server's token did not "
            f"match its own); give both sides the same token=",
        ),
        (
            logging.WARNING,
            f"{url} refused a client (pid {me}, uid {uid}): this server requires a token; pass "
            f"token=... to connect",
        ),
        (
            logging.WARNING,
            f"{url} refused a client (pid {me}, uid {uid}): the codecs differ: the client uses "
            f"codec='json', the server codec='bytes'; use the same codec on both sides",
        ),
        (
            logging.INFO,
            f"{url} dropped pid {me}, uid {uid}: the peer closed the connection during the setup",
        ),
    ]


def _goes_away(url: str) -> None:
    """A client that connects and closes without a word."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(socket_path(parse_url(url)))


def test_blocking(shm_url: Callable[[], str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    url = shm_url()
    with ipcwire.listen(url, token=TOKEN):
        for n, (token, codec, error) in enumerate(
            [
                ("b" * 16, "bytes", AuthenticationFailed),
                (None, "bytes", AuthenticationFailed),
                (TOKEN, "json", HandshakeError),
            ]
        ):
            with pytest.raises(error):
                ipcwire.connect(url, token=token, codec=codec, timeout=5)
            assert wait_until(lambda n=n: len(_lines(caplog, url)) > n, 10)
        _goes_away(url)
        assert wait_until(lambda: len(_lines(caplog, url)) > 3, 10)
    assert _lines(caplog, url) == _expected(url)


def test_asyncio(
    shm_url: Callable[[], str], aio_run: AioRun, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    url = shm_url()

    async def until(n: int) -> None:
        async with asyncio.timeout(10):
            while len(_lines(caplog, url)) <= n:
                await asyncio.sleep(0.01)  # (the listener's task logs; polled, not timed)

    async def main() -> None:
        async with await aio.listen(url, token=TOKEN):
            for n, (token, codec, error) in enumerate(
                [
                    ("b" * 16, "bytes", AuthenticationFailed),
                    (None, "bytes", AuthenticationFailed),
                    (TOKEN, "json", HandshakeError),
                ]
            ):
                with pytest.raises(error):
                    await aio.connect(url, token=token, codec=codec, timeout=5)
                await until(n)
            await asyncio.get_running_loop().run_in_executor(None, _goes_away, url)
            await until(3)

    aio_run(main())
    assert _lines(caplog, url) == _expected(url)
