"""gRPC review (rev-grpc): timeout=inf (no limit) and timeout=nan (ConfigurationError) on
request(), as every other mechanism takes them (ipcwire/_deadline.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests._threads import BOUND

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel, Listener
from ipcwire.errors import ConfigurationError

# In a child: before, the stream's request(timeout=inf) killed the watchdog thread that every
# blocking gRPC channel of the process shares, which a test's own process cannot afford.
WATCHDOG = """
import threading, ipcwire
from ipcwire.errors import Timeout

def serve(ch):
    for msg in ch:
        if msg != b"never":  # (no reply to that one)
            ch.send(msg)

with ipcwire.listen("grpc://127.0.0.1:0") as lis:
    threading.Thread(target=lis.serve, args=(serve,), daemon=True).start()
    for t in (float("inf"), 1e300):
        with ipcwire.connect(lis.url) as ch:
            assert ch.request(b"x", timeout=t) == b"x"
    with ipcwire.connect(lis.url) as ch:
        try:
            ch.request(b"x", timeout=float("nan"))
        except ipcwire.errors.ConfigurationError:
            print("ConfigurationError", flush=True)
    with ipcwire.connect(lis.url) as ch:
        try:
            ch.request(b"never", timeout=0.2)
        except Timeout:
            print("Timeout", flush=True)
"""


def test_a_blocking_request_without_limit_leaves_the_watchdog_alive() -> None:
    """A stream's request(timeout=inf) (or 1e300) made the watchdog thread's wait raise
    OverflowError, and the thread died: from then on no request(timeout=) of any blocking
    gRPC channel in the process timed out (a request the server never answered waited for
    ever), and closed channels were never released. timeout=nan is ConfigurationError."""
    done = subprocess.run(
        [sys.executable, "-c", WATCHDOG], check=False, capture_output=True, text=True, timeout=10
    )
    assert done.stdout == "ConfigurationError\nTimeout\n", done.stderr[-2000:]


def _echo(ch: Channel) -> None:
    for msg in ch:
        ch.send(msg)


@pytest.fixture
def echo() -> Iterator[Listener]:
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:
        t = threading.Thread(target=lis.serve, args=(_echo,), daemon=True)
        t.start()
        yield lis
    t.join(BOUND)


def _blocking(url: str, timeout: float, **kw: Any) -> Any:
    with ipcwire.connect(url, **kw) as ch:
        return ch.request(b"x", timeout=timeout)


def _asyncio(url: str, timeout: float, **kw: Any) -> Any:
    async def main() -> Any:
        async with await aio.connect(url, **kw) as ch:
            return await ch.request(b"x", timeout=timeout)

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("request_", "unary"), [(_blocking, True), (_asyncio, True), (_asyncio, False)]
)  # (the blocking stream: in a child, above)
def test_no_limit_and_not_a_number(echo: Listener, request_: Any, unary: bool) -> None:
    """unary=True: request(timeout=inf) (no limit, as everywhere) raised Timeout at once
    ('the deadline passed': grpc took it for a deadline in the past), and timeout=nan raised
    Timeout instead of ConfigurationError. Both drivers."""
    for t in (float("inf"), 1e300):
        assert request_(echo.url, t, unary=unary) == b"x"
    with pytest.raises(ConfigurationError, match="nan"):
        request_(echo.url, float("nan"), unary=unary)
