"""After the server is killed -9, send() says so in the same words on both APIs.

The asyncio client's send() said 'cannot send to URL: the server ended the channel', which
reads like a clean close, while the blocking client's said 'URL answered UNAVAILABLE: Stream
removed (...)': the asyncio driver never looked at the status of the call that ended.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken

SERVER = """
import sys, ipcwire
with ipcwire.listen("grpc://127.0.0.1:0", codec="json") as listener:
    print(listener.url, flush=True)
    with listener.accept(timeout=10) as ch:
        ch.send(ch.recv(timeout=10))
        sys.stdin.readline()  # until killed
"""


def _server() -> tuple[subprocess.Popen[str], str]:
    srv = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert srv.stdout is not None
    url = srv.stdout.readline().strip()
    assert url
    return srv, url


def _check(err: ChannelBroken) -> None:
    assert "answered UNAVAILABLE" in str(err), err
    assert "the server ended the channel" not in str(err), err


def test_blocking() -> None:
    srv, url = _server()
    try:
        with ipcwire.connect(url, codec="json", timeout=10) as ch:
            assert ch.request(1, timeout=10) == 1
            srv.kill()
            srv.wait()
            with pytest.raises(ChannelBroken) as recv_err:
                ch.recv(timeout=10)
            _check(recv_err.value)
            with pytest.raises(ChannelBroken) as send_err:
                ch.send(2)
            _check(send_err.value)
    finally:
        srv.kill()
        srv.wait()


def test_asyncio() -> None:
    async def main() -> None:
        srv, url = _server()
        try:
            async with await aio.connect(url, codec="json", timeout=10) as ch:
                assert await ch.request(1, timeout=10) == 1
                srv.kill()
                srv.wait()
                with pytest.raises(ChannelBroken) as recv_err:
                    await ch.recv(timeout=10)
                _check(recv_err.value)
                with pytest.raises(ChannelBroken) as send_err:
                    await ch.send(2)
                _check(send_err.value)
        finally:
            srv.kill()
            srv.wait()

    asyncio.run(main())
