"""An asyncio shm channel whose peer is killed (-9) in the middle of a message longer than
the ring learns it (ChannelBroken), however the loop ordered the events.

helper-114's asyncio server left about one handler in ten waiting for ever on such a client:
a recv() took a ring's worth of fragments the peer wrote just before it died and yielded (a
message still arriving); in that yield the loop saw the hang-up, stopped watching the
channel's descriptors and woke nobody (nobody waited); the recv() then found the ring empty
and parked on a descriptor no longer watched. That order is a race; here the hang-up is seen
before the next wait every time, and that wait must not park."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from tests._loops import AioRun
from tests._proc import kill9, python, wait_line

from ipcwire import aio
from ipcwire.errors import ChannelBroken

SENDER = """
import sys, ipcwire
ch = ipcwire.connect(sys.argv[1], codec="bytes", capacity=1 << 16, timeout=10)
ch.send(b"first")
print("sending", flush=True)
ch.send(b"y" * (4 << 20))   # blocks once the ring is full: the reader does not read it yet
"""


def test_a_peer_killed_mid_message_breaks_the_next_recv(aio_run: AioRun) -> None:
    url = f"shm://ipcwk-{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        async with await aio.listen(url, codec="bytes") as lst:
            proc = python(SENDER.replace("sys.argv[1]", repr(url)))
            try:
                async with await lst.accept(timeout=20) as ch:
                    assert await ch.recv(timeout=20) == b"first"
                    assert await asyncio.to_thread(wait_line, proc) == "sending"
                    rx = ch._rx  # type: ignore[attr-defined]
                    full = rx.capacity - 64  # (a record's padding may leave a little)
                    for _ in range(2000):  # (the ring's fill: nothing to wait on)
                        if rx.buffered >= full:
                            break
                        await asyncio.sleep(0.005)
                    assert rx.buffered >= full, "the sender did not fill the ring"
                    kill9(proc)
                    for _ in range(3):  # the loop's turns: it sees the hang-up now
                        await asyncio.sleep(0)
                    assert ch._watched == []  # type: ignore[attr-defined]
                    # what recv() does next when a ring's worth came in before the hang-up:
                    # wait for the doorbell (nobody rings it now); it must not wait
                    await asyncio.wait_for(ch._park("rx", None), 5)  # type: ignore[attr-defined]
                    with pytest.raises(ChannelBroken):
                        await ch.recv(timeout=5)
            finally:
                if proc.poll() is None:
                    kill9(proc)
                for stream in (proc.stdout, proc.stderr, proc.stdin):
                    if stream is not None:
                        stream.close()

    aio_run(main())
    assert os.path.exists("/dev/shm")  # (the test's module fixture checks nothing was left)
