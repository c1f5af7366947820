"""asyncio: receiving a message does not map and unmap memory (ipcwire.aio._read_size).

asyncio's transports read with ``recv(256 KiB)`` for a protocol that is not a
``BufferedProtocol`` (a datagram endpoint, websockets' connections, an asyncio stream): the
bytes are allocated at that size, then shrunk to what came. 256 KiB is over malloc's mmap
threshold (128 KiB until the process happens to free a larger block), so in the usual heap
state every read cost an mmap, a page fault, an mremap and an munmap: ~28 us of a ~35 us UDP
receive, measured. Counted, not timed: the child fixes malloc's thresholds at their defaults
(``MALLOC_MMAP_THRESHOLD_``, which also stops them from moving) and counts its minor page
faults over the exchanges; each mapping made a fresh page fault, so before the fix it counted
at least one per read (udp 4000, ws 4000 over 1000 round trips; sse 2040 over 1000 events).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests._faults import child_faults

from ipcwire import aio

ROUND_TRIPS = 1000

_CHILD = """
import asyncio, resource, sys
from ipcwire import aio

url, round_trips, two_way = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "two-way"

async def exchange(ch, peer, msg):
    if two_way:  # (else Server-Sent Events: the listener's side sends)
        await ch.send(msg); assert await peer.recv(timeout=10) == msg
    await peer.send(msg); assert await ch.recv(timeout=10) == msg

async def main():
    async with await aio.listen(url) as lst:
        async with await aio.connect(lst.url, timeout=10) as ch:
            if two_way:
                await ch.send(b"hello")
            peer = await lst.accept(timeout=10)
            if two_way:
                await peer.recv(timeout=10)
            msg = b"x" * 64
            for _ in range(100):  # warm up: the heap has grown to what the loop needs
                await exchange(ch, peer, msg)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(round_trips):
                await exchange(ch, peer, msg)
            print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            await peer.aclose()

asyncio.run(main())
"""


@pytest.mark.parametrize("scheme", ["udp", "ws", "ws+unix", "sse+http"])
def test_messages_are_read_without_mapping_memory(scheme: str, tmp_path: Path) -> None:
    url = {
        "udp": "udp://127.0.0.1:0",
        "ws": "ws://127.0.0.1:0/faults",
        "ws+unix": f"ws+unix://{tmp_path}/ws.sock",
        "sse+http": "sse+http://127.0.0.1:0/faults",
    }[scheme]
    way = "one-way" if scheme == "sse+http" else "two-way"
    faults = child_faults(_CHILD, url, str(ROUND_TRIPS), way)
    # 2000 messages: at least 2000 faults before; a few for the interpreter's own growth now
    assert faults < ROUND_TRIPS // 4, (
        f"{faults} page faults over {2 * ROUND_TRIPS} {scheme} messages"
    )


async def _largest_datagram_round_trip() -> None:
    big = bytes(range(256)) * 255 + b"x" * (65507 - 256 * 255)
    async with (
        await aio.listen("udp://127.0.0.1:0") as lst,
        await aio.connect(lst.url, timeout=10) as ch,
    ):
        await ch.send(big)
        peer = await lst.accept(timeout=10)
        assert await peer.recv(timeout=10) == big
        await peer.send(big)
        assert await ch.recv(timeout=10) == big
        await peer.aclose()


def test_the_largest_udp_datagram_still_arrives_whole() -> None:
    """The smaller read is still more than any UDP payload over IPv4 (65507 bytes)."""
    asyncio.run(_largest_datagram_round_trip())
