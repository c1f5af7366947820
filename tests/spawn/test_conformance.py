"""The public conformance suite against spawn(): a real child relays between the two ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from tests._loops import AioRun

from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.pipe import SPEC
from ipcwire.pipe._fdutil import make_pipe
from ipcwire.spawn import spawn, stdio_channel
from ipcwire.spawn.aio import spawn as aio_spawn
from ipcwire.spawn.aio import stdio_channel as aio_stdio_channel
from ipcwire.testing import acheck_channel, check_channel

RELAY = str(Path(__file__).with_name("relay.py"))


def _defaults(options: dict[str, Any]) -> dict[str, Any]:
    # The suite's defaults are the library's (length framing, bytes); spawn's are JSON lines.
    opts = dict(options)
    opts.setdefault("framing", "length")
    opts.setdefault("codec", "bytes")
    return opts


@contextlib.contextmanager
def make_pair(**options: Any) -> Iterator[tuple[Channel, Channel]]:
    opts = _defaults(options)
    to_child_r, to_child_w = make_pipe()  # b writes, the relay reads and copies to its stdout
    from_child_r, from_child_w = make_pipe()  # the relay copies its stdin here, b reads
    # With a token both sides handshake at once: the child side waits in a thread.
    box: list[Channel | BaseException] = []

    def child_side() -> None:
        try:
            box.append(stdio_channel(from_child_r, to_child_w, **opts))
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=child_side)
    t.start()
    try:
        a = spawn(
            [sys.executable, RELAY, str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            exit_timeout=5.0,
            **opts,
        )
    finally:
        os.close(to_child_r)
        os.close(from_child_w)
        t.join()
    b = box[0]
    if isinstance(b, BaseException):
        a.close()
        raise b
    with a, b:
        yield a, b


def test_blocking_conformance() -> None:
    check_channel(make_pair, SPEC.capabilities)


@contextlib.asynccontextmanager
async def amake_pair(**options: Any) -> AsyncIterator[tuple[AioChannel, AioChannel]]:
    opts = _defaults(options)
    to_child_r, to_child_w = make_pipe()
    from_child_r, from_child_w = make_pipe()
    child_side = asyncio.ensure_future(aio_stdio_channel(from_child_r, to_child_w, **opts))
    try:
        a = await aio_spawn(
            [sys.executable, RELAY, str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            exit_timeout=5.0,
            **opts,
        )
    except BaseException:
        child_side.cancel()
        raise
    finally:
        os.close(to_child_r)
        os.close(from_child_w)
    b = await child_side
    async with a, b:
        yield a, b


def test_asyncio_conformance(aio_run: AioRun) -> None:
    aio_run(acheck_channel(amake_pair, SPEC.capabilities))
