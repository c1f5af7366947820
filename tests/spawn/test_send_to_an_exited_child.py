"""A send that waits on the full stdin pipe of a child that has exited, while a grandchild it
started still holds that pipe (and does not read it): ``ChannelBroken`` at once, naming the
child's exit, on both APIs.

Before, the blocking send waited for room that only the grandchild could make: it raised
``Timeout`` when its timeout passed, and without a timeout it never returned (the parent
waited for ever on a dead child). The asyncio send failed at once, but said "the connection
is gone (None)"."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests._loops import AioRun
from tests.spawn._util import py

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken

# The child leaves a grandchild holding its stdin and stdout (not reading), then exits.
CHILD = """
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print('"up"', flush=True)
"""
BIG = "x" * (4 * 1024 * 1024)  # more than the pipe holds (1 MiB at most)
WAIT = 10.0


def test_a_blocking_send_to_an_exited_child_fails_at_once() -> None:
    with ipcwire.spawn(py(CHILD), exit_timeout=0.5, term_timeout=1) as ch:
        assert ch.recv(timeout=WAIT) == "up"
        assert ch.wait(WAIT) == 0
        began = time.monotonic()
        with pytest.raises(ChannelBroken) as err:
            ch.send(BIG, timeout=WAIT)
        assert time.monotonic() - began < WAIT / 2
        assert "the child exited with code 0" in str(err.value)
        with pytest.raises(ChannelBroken):  # and so does the next one
            ch.send(BIG, timeout=WAIT)


def test_an_asyncio_send_to_an_exited_child_says_it_exited(aio_run: AioRun) -> None:
    async def main() -> str:
        async with await aio.spawn(py(CHILD), exit_timeout=0.5, term_timeout=1) as ch:
            assert await ch.recv(timeout=WAIT) == "up"
            assert await ch.wait(WAIT) == 0
            with pytest.raises(ChannelBroken) as err:
                await asyncio.wait_for(ch.send(BIG, timeout=WAIT), WAIT + 5)
            return str(err.value)

    said = aio_run(main())
    assert "(None)" not in said
    assert "exited" in said
