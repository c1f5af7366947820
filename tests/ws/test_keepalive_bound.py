"""A frozen peer (SIGSTOP) breaks the channel at ``ping_interval + ping_timeout``: a peer that
missed its pong cannot answer a closing handshake either. The library waited
``close_timeout`` more for one (1 s + 1 s took 5.0 s, the defaults 43 s, not the 40 s the docs
said). Both APIs, both sides. ``close_timeout`` is 10 s here, so a channel that breaks within
5 s did not wait for it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tests._proc import child, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken

KEEPALIVE: dict[str, Any] = {"ping_interval": 0.2, "ping_timeout": 0.3, "close_timeout": 10.0}
BOUND = 5.0  # well over ping_interval + ping_timeout, well under close_timeout


@contextmanager
def frozen(proc: subprocess.Popen[str]) -> Iterator[float]:
    """Stop ``proc``; the time it was stopped at; continue it at the end."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def _client(url: str) -> str:
    return f"""
import time, ipcwire
c = ipcwire.connect({url!r}, ping_interval=None)
print("ready", flush=True)
time.sleep(60)
"""


SERVER = """
import time, ipcwire
lst = ipcwire.listen("ws://127.0.0.1:0/x", ping_interval=None)
print(lst.url, flush=True)
ch = lst.accept(timeout=20)
print("ready", flush=True)
time.sleep(60)
"""


def test_listener_blocking() -> None:
    with (
        ipcwire.listen("ws://127.0.0.1:0/x", **KEEPALIVE) as lst,
        child(_client(lst.url)) as proc,
        lst.accept(timeout=10) as ch,
    ):
        assert wait_line(proc) == "ready"
        with frozen(proc) as t0:
            with pytest.raises(ChannelBroken, match="keepalive"):
                ch.recv(timeout=30)
            assert time.monotonic() - t0 < BOUND


def test_listener_aio() -> None:
    async def main() -> None:
        async with await aio.listen("ws://127.0.0.1:0/x", **KEEPALIVE) as lst:
            with child(_client(lst.url)) as proc:
                ch = await lst.accept(timeout=10)
                assert wait_line(proc) == "ready"  # (the client wrote it before accept())
                with frozen(proc) as t0:
                    with pytest.raises(ChannelBroken, match="keepalive"):
                        await ch.recv(timeout=30)
                    assert time.monotonic() - t0 < BOUND
                await ch.aclose()

    asyncio.run(main())


def test_client_blocking() -> None:
    with child(SERVER) as proc:
        url = wait_line(proc)
        with ipcwire.connect(url, timeout=10, **KEEPALIVE) as ch:
            assert wait_line(proc) == "ready"
            with frozen(proc) as t0:
                with pytest.raises(ChannelBroken, match="keepalive"):
                    ch.recv(timeout=30)
                assert time.monotonic() - t0 < BOUND


def test_client_aio() -> None:
    async def main() -> None:
        with child(SERVER) as proc:
            url = wait_line(proc)
            ch = await aio.connect(url, timeout=10, **KEEPALIVE)
            assert wait_line(proc) == "ready"
            with frozen(proc) as t0:
                with pytest.raises(ChannelBroken, match="keepalive"):
                    await ch.recv(timeout=30)
                assert time.monotonic() - t0 < BOUND
            await ch.aclose()

    asyncio.run(main())
