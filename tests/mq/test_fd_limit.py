"""Connecting with the descriptor limit reached: ResourceExhausted that says so (the kernel
reports an exhausted RLIMIT_MSGQUEUE with the same EMFILE; this is not that), and nothing of
the half-opened channel left open."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable

import ipcwire
from ipcwire.errors import ChannelClosed

CHILD = """
import asyncio, os, resource, sys, ipcwire, ipcwire.mq.blocking, ipcwire.mq.aio
url = sys.argv[1]
ipcwire.connect(url, timeout=10).close()  # everything imported and warm first
loop = asyncio.new_event_loop()


async def aconnect():
    ch = await ipcwire.aio.connect(url, timeout=10)
    await ch.aclose()


loop.run_until_complete(aconnect())


def nfd():
    return len(os.listdir("/proc/self/fd"))


def open_at(room, how):
    # fill the holes below the highest descriptor, so that exactly `room` more fit
    hi = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    fill = []
    while (fd := os.open("/dev/null", os.O_RDONLY)) <= hi:
        fill.append(fd)
    os.close(fd)
    before = nfd() - len(fill)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hi + 1 + room, 4096))
    try:
        if how == "asyncio":
            loop.run_until_complete(aconnect())
        else:
            ipcwire.connect(url, timeout=10).close()
        result = "ok"
    except ipcwire.ResourceExhausted as exc:
        result = "RLIMIT_MSGQUEUE" if "RLIMIT_MSGQUEUE" in str(exc) else "descriptors"
    except Exception as exc:
        result = "UNTYPED " + repr(exc)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
        for fd in fill:
            os.close(fd)
    print(how, room, result, "leaked", nfd() - before, flush=True)


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
            [sys.executable, "-c", CHILD, url],
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
