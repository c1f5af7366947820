"""The asyncio baselines read as ipcwire's asyncio transports do (docs/benchmarks.md, "Equal
reads"): at most 127 KiB at a time, not asyncio's 256 KiB, which costs an mmap, page faults,
an mremap and an munmap per read whenever the process's heap is in the usual state; a baseline
paying that (55 us for an asyncio UDP round trip in one loop, 19 us without) made its ratio
measure the heap's luck, not ipcwire's code.

Counted, not timed: each baseline's two sides run in a child whose malloc thresholds are fixed
at their defaults (``MALLOC_MMAP_THRESHOLD_``, which also stops them from moving), and the
child counts its minor page faults over 1000 exchanges: each mapping made a fresh fault, so
before, every baseline here counted at least one per message (4000 per 1000 round trips; the
one-way SSE stream 2000).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests._faults import child_faults

EXCHANGES = 1000

_CHILD = """
import asyncio, resource, sys
from ipcwire.bench.builtin import all_contenders
from ipcwire.bench.contender import Task

cid, workdir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = {x.id: x for x in all_contenders([])}[cid]
task = Task(contender=c, kind="round_trip", size=64, batch=0, warmup=0.0, duration=0.0,
            workdir=workdir, serial=1, seed=0)
one_way = "round_trip" not in c.kinds  # (SSE: side A sends)

async def main():
    acceptor = await c.side_a(task, None)
    b = await c.side_b(task, acceptor.address, None)
    msg = b"x" * 64
    if not one_way:
        await b.send(msg)
    a = await acceptor.accept()
    if not one_way:
        assert await a.recv() == msg

    async def exchange():
        if not one_way:
            await b.send(msg); assert await a.recv() == msg
        await a.send(msg); assert await b.recv() == msg

    for _ in range(100):  # warm up: the heap has grown to what the loop needs
        await exchange()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        await exchange()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    await b.aclose()
    await a.aclose()
    await acceptor.aclose()

asyncio.run(main())
"""


@pytest.mark.parametrize(
    "contender",
    [
        "raw/unix/asyncio",
        "raw/tcp/asyncio",
        "raw/udp/asyncio",
        "raw/ws/asyncio",
        "raw/ws+unix/asyncio",
        "raw/sse+http/asyncio",
    ],
)
def test_an_asyncio_baseline_reads_without_mapping_memory(contender: str, tmp_path: Path) -> None:
    faults = child_faults(_CHILD, contender, str(tmp_path), str(EXCHANGES))
    assert faults < EXCHANGES // 4, f"{contender}: {faults} page faults, {EXCHANGES} exchanges"
