"""The shared-memory bench rows run end to end through the bench: real worker processes,
every message verified by the harness's loops.

``raw/shm`` (the hand-written pure-Python mmap ring, issue 3's baseline) both ways and
``ipcwire/shm/blocking/spin/loan`` (loan + send_loan, recv_view) one way, at 64 B and at a
size whose records do not divide the ring (so both rings wrap with a marker or padding). Short
phases: this proves they work and are verified, it measures nothing.
"""

from __future__ import annotations

import glob
import mmap
import random

from ipcwire.bench import BenchConfig, run
from ipcwire.bench.runner import plan
from ipcwire.shm import _bench
from ipcwire.shm._bench import loan_capacity, ring_capacity

ROWS = ("raw/shm", "ipcwire/shm/blocking/spin/loan")
ODD = 300_000  # records of 300 008 / 300 016 bytes in 2 MiB rings: every lap ends in a gap


def _leftovers() -> set[str]:
    return set(glob.glob("/dev/shm/ipcwire-rawshm-*"))


def test_shm_bench_rows_run_and_are_verified() -> None:
    before = _leftovers()
    config = BenchConfig(
        round_trip_sizes=(64,),
        throughput_sizes=(64, ODD),
        repeat=1,
        duration=0.05,
        warmup=0.01,
        only=ROWS,
        apis=("blocking",),
        peers=False,
        floor=False,
        budget=None,
        preset="test",
    )
    out = run(config)
    got = {(m.contender.id, m.kind, m.size): m for m in out.measurements}
    assert set(got) == {
        ("raw/shm", "round_trip", 64),
        ("raw/shm", "throughput", 64),
        ("raw/shm", "throughput", ODD),
        ("ipcwire/shm/blocking/spin/loan", "throughput", 64),
        ("ipcwire/shm/blocking/spin/loan", "throughput", ODD),
    }
    for key, m in got.items():
        assert m.error is None, f"{key}: {m.error}\n{m.detail}"
        assert len(m.reps) == 1, key
        rep = m.reps[0]
        assert rep["a"]["count"] == rep["b"]["count"] > 0, key
    assert _leftovers() <= before  # raw/shm unlinks its segment once both ends map it


def test_shm_rows_compare_with_the_python_ring() -> None:
    chosen, _, _ = plan(BenchConfig(mechanisms=("shm",)), [])
    by_id = {c.id: c for c in chosen}
    assert by_id["raw/shm"].group == "baseline"
    for policy in ("spin", "park", "hybrid"):
        assert by_id[f"ipcwire/shm/blocking/{policy}"].baseline == "raw/shm"
        assert by_id[f"ipcwire/shm/blocking/{policy}/batched"].baseline == "raw/shm"
    assert by_id["ipcwire/shm/blocking/spin/loan"].baseline == "raw/shm"
    if "peer/iceoryx2" in by_id:  # installed by the test command
        assert by_id["peer/iceoryx2"].baseline == "raw/shm"
        assert by_id["peer/iceoryx2"].kinds == ("round_trip", "throughput")


def test_ring_sizes() -> None:
    assert ring_capacity(64) == 1 << 20
    assert ring_capacity(1 << 20) == 8 << 20  # four 1 MiB messages and their lengths
    assert loan_capacity(64) == 2 << 20
    assert loan_capacity(1 << 20) == 8 << 20


def test_python_ring_wraps_and_keeps_every_byte() -> None:
    """Both ends of ``raw/shm`` in one process: messages of random sizes, up to three in
    flight, so records end at every offset and the marker at the end of the ring is used."""
    cap = ring_capacity(64)
    mm = mmap.mmap(-1, _bench._PAGE + 2 * (_bench._PAGE + cap))
    a = _bench._RawEnd(mm, cap, is_a=True)
    b = _bench._RawEnd(mm, cap, is_a=False)
    rng = random.Random(7)
    pending: list[bytes] = []
    for _ in range(3000):
        msg = rng.randbytes(rng.randrange(0, cap // 8))
        b.send(msg)
        pending.append(msg)
        if len(pending) == 3:
            assert a.recv() == pending.pop(0)
    b.send(b"back")
    for msg in pending:
        assert a.recv() == msg
    assert a.recv() == b"back"
    a.send(b"x" * 100)
    assert b.recv() == b"x" * 100
    assert b._tail > 4 * cap  # it went round several times
    a.close()
    b.close()
