"""Connecting with (almost) no descriptors left: a typed error, and nothing left open.

For each number of free descriptors from 0 up, ``connect()`` (blocking and asyncio) either
works or raises ``ResourceExhausted`` naming the limit; either way the process has exactly
the descriptors it had before. A probe of every mechanism found a bare ``OSError(EMFILE)``
out of shm, udp, ws (asyncio) and http connects (a socket or an SSL context made before the
driver's own error handling), and the blocking ws client, with room for its socket but not
for its reader thread's selector, saying the peer had died (1006) and leaving a descriptor
open; a fifo client out of descriptors for its waker left the FIFO it had opened open. Worst,
gRPC's core aborted the whole process (SIGABRT, "Check failed: init_epoll1_linux()") when it
had to start with fewer than four descriptors free. (mq and spool have their own tests.)
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tests._proc import FD_ROOM, child, wait_line

ROOMS = 7  # every mechanism needs more than this many descriptors for a channel

SERVER = """
import sys, ipcwire
lst = ipcwire.listen(sys.argv[1])


def handler(ch):
    if lst.url.startswith("sse"):
        ch.send(b"hi")  # (server to client only)
        return
    for msg in ch:
        ch.send(msg)


print(lst.url, flush=True)
lst.serve(handler)
"""

CLIENT = (
    FD_ROOM
    + """
import asyncio, gc, sys, ipcwire

url = sys.argv[1]
loop = asyncio.new_event_loop()


def use():
    with ipcwire.connect(url, timeout=10) as ch:
        if url.startswith("sse"):
            assert ch.recv(timeout=10) == b"hi"
        else:
            assert ch.request(b"x", timeout=10) == b"x"


async def ause():
    ch = await ipcwire.aio.connect(url, timeout=10)
    try:
        if url.startswith("sse"):
            assert await ch.recv(timeout=10) == b"hi"
        else:
            assert await ch.request(b"x", timeout=10) == b"x"
    finally:
        await ch.aclose()


def blocking():
    use()
    return "ok"


def aio():
    loop.run_until_complete(ause())
    return "ok"


for attempt in (blocking, aio, blocking, aio):  # everything imported and warm first
    attempt()
gc.collect()
for attempt in (blocking, aio):
    for room in range(int(sys.argv[2])):
        result, left = at_fd_room(room, attempt)
        gc.collect()
        if isinstance(result, ipcwire.ResourceExhausted) and "ulimit -n" in str(result):
            result = "ResourceExhausted"
        elif not isinstance(result, str):
            result = f"{type(result).__name__}: {result}"
        print(attempt.__name__, room, result, "left", left, flush=True)
"""
)


def _urls(d: Path) -> dict[str, str]:
    return {
        "unix": f"unix://{d}/u.sock",
        "tcp": "tcp://127.0.0.1:0",
        "shm": f"shm://ipcwfd-{uuid.uuid4().hex[:8]}",
        "udp": "udp://127.0.0.1:0",
        "ws": "ws://127.0.0.1:0/x",
        "ws+unix": f"ws+unix://{d}/w.sock",
        "http": "http://127.0.0.1:0/x",
        "sse": "sse+http://127.0.0.1:0/x",
        "grpc": "grpc://127.0.0.1:0",
        "fifo": f"fifo://{d}/in.fifo?reply={d}/out.fifo",
    }


@pytest.mark.parametrize("kind", sorted(_urls(Path("/"))))
def test_connect_at_the_descriptor_limit(kind: str, tmp_path: Path) -> None:
    # gRPC's core starts and stops its own descriptors (its poller) in the background, so
    # its count after a connect says nothing about the channel's; its rows are checked for
    # typed errors (and the process for surviving) only
    check_at_the_limit(_urls(tmp_path)[kind], count_left=kind != "grpc")


def check_at_the_limit(listen_url: str, *, count_left: bool = True) -> None:
    """Serve ``listen_url`` in a child; connect from another at each number of free
    descriptors: "ok" or ResourceExhausted, and (``count_left``) nothing left open."""
    with child(SERVER.replace("sys.argv[1]", repr(listen_url))) as server:
        url = wait_line(server)
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, url, str(ROOMS)],
            check=False,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert len(lines) == 2 * ROOMS, out.stdout
    bad = [
        line
        for line in lines
        if line.split()[2] not in ("ok", "ResourceExhausted")
        or (count_left and not line.endswith("left 0"))
    ]
    assert not bad, "\n".join(bad)
    assert any(" 0 ResourceExhausted" in line for line in lines), out.stdout
