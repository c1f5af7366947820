"""close() of an asyncio spawn channel after its loop ended (see
tests/test_close_after_loop.py): it raised RuntimeError ('Event loop is closed') and warned
that the shutdown coroutine was never awaited, and the child lived on until interpreter exit.
Now the shutdown ladder runs there and then, blocking: stdin closed, then SIGTERM, SIGKILL."""

from __future__ import annotations

import sys

from tests._loops import AioRun

from ipcwire import aio
from ipcwire.errors import ChannelClosed
from ipcwire.spawn.aio import AioSpawnChannel

ECHO = "import ipcwire\nwith ipcwire.stdio() as ch:\n    for m in ch:\n        ch.send(m)\n"
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"


def test_a_child_whose_channel_outlived_its_loop_is_shut_down_by_close(aio_run: AioRun) -> None:
    async def main() -> AioSpawnChannel:
        ch = await aio.spawn([sys.executable, "-c", ECHO])
        await ch.send("ping")
        assert await ch.recv(timeout=10) == "ping"
        return ch

    ch = aio_run(main())
    ch.close()  # raised RuntimeError
    assert ch.returncode == 0  # stdin closed: the echo loop ended, the child exited
    ch.close()
    try:
        aio_run(ch.recv())
    except ChannelClosed:
        pass
    else:
        raise AssertionError("recv() after close() must raise ChannelClosed")


def test_a_child_that_ignores_sigterm_is_killed(aio_run: AioRun) -> None:
    ch = aio_run(aio.spawn([sys.executable, "-c", STUBBORN], exit_timeout=0.2, term_timeout=0.2))
    ch.close()
    assert ch.returncode == -9
