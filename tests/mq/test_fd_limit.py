"""Connecting with the descriptor limit reached: ResourceExhausted that says so (the kernel
reports an exhausted RLIMIT_MSGQUEUE with the same EMFILE; this is not that), and nothing of
the half-opened channel left open."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable

from tests._proc import FD_ROOM

import ipcwire
from ipcwire.errors import ChannelClosed

CHILD = """
import asyncio, sys, ipcwire, ipcwire.mq.blocking, ipcwire.mq.aio
url = sys.argv[1]
ipcwire.connect(url, timeout=10).close()  # everything imported and warm first
loop = asyncio.new_event_loop()


async def aconnect():
    ch = await ipcwire.aio.connect(url, timeout=10)
    await ch.aclose()


loop.run_until_complete(aconnect())


def open_at(room, how):
    def attempt():
        if how == "asyncio":
            loop.run_until_complete(aconnect())
        else:
            ipcwire.connect(url, timeout=10).close()
        return "ok"

    result, leaked = at_fd_room(room, attempt)
    if isinstance(result, ipcwire.ResourceExhausted):
        result = "RLIMIT_MSGQUEUE" if "RLIMIT_MSGQUEUE" in str(result) else "descriptors"
    print(how, room, result, "leaked", leaked, flush=True)


for how in ("blocking", "asyncio"):
    for room in range(5):
        open_at(room, how)
"""


def test_connect_at_the_descriptor_limit(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    with ipcwire.listen(url) as listener:

        def serve() -> None:
            while True:
                try:
                    listener.accept().close()
                except ChannelClosed:
                    return

        threading.Thread(target=serve, daemon=True).start()
        proc = subprocess.run(
            [sys.executable, "-c", FD_ROOM + CHILD, url],
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 10, proc.stdout
    bad = [
        ln
        for ln in lines
        if not ln.endswith("leaked 0") or ln.split()[2] not in ("ok", "descriptors")
    ]
    assert not bad, proc.stdout
