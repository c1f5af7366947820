"""The spawn, fifo, pipe and udp rows and their raw baselines run end to end.

Real worker processes, real children, FIFOs and sockets, with the harness's verification of
every message: each row finishes its measurements (so nothing was lost, cut or changed), and
each ipcwire row points at a raw baseline that is in the same run.
"""

from __future__ import annotations

from ipcwire.bench.builtin import all_contenders
from ipcwire.bench.trial import results_by, trial

ROWS = (
    "raw/spawn",
    "raw/spawn/batched",
    "raw/spawn/asyncio",
    "ipcwire/spawn/blocking",
    "ipcwire/spawn/blocking/batched",
    "ipcwire/spawn/asyncio",
    "ipcwire/spawn/asyncio/batched",
    "raw/fifo",
    "raw/fifo/batched",
    "raw/fifo/asyncio",
    "raw/pipe/asyncio",
    "raw/udp",
    "raw/udp/asyncio",
)

BASELINES = {
    "ipcwire/spawn/blocking": "raw/spawn",
    "ipcwire/spawn/asyncio": "raw/spawn/asyncio",
    "ipcwire/fifo/blocking": "raw/fifo",
    "ipcwire/fifo/asyncio": "raw/fifo/asyncio",
    "ipcwire/pipe/blocking": "raw/pipe",
    "ipcwire/pipe/asyncio": "raw/pipe/asyncio",
    "ipcwire/udp/blocking": "raw/udp",
    "ipcwire/udp/asyncio": "raw/udp/asyncio",
}


def test_new_rows_run_verified_in_both_kinds() -> None:
    seen = results_by(trial(ROWS), "contender", "kind")  # every measurement finished
    assert {cid for cid, _ in seen} == set(ROWS)
    # UDP is unreliable: round trips only. The others: round trips and throughput.
    assert ("raw/udp", "throughput") not in seen
    for cid in ("raw/spawn", "ipcwire/spawn/blocking", "raw/fifo", "ipcwire/spawn/asyncio"):
        assert {(cid, "round_trip"), (cid, "throughput")} <= set(seen)


def test_ipcwire_rows_point_at_baselines_that_exist() -> None:
    notes: list[str] = []
    known = {c.id: c for c in all_contenders(notes)}
    for cid, base in BASELINES.items():
        assert known[cid].baseline == base, cid
        assert known[base].group == "baseline"
        assert known[base].mechanism == known[cid].mechanism
        assert known[base].api == known[cid].api
    for cid in ("ipcwire/spawn/blocking/batched", "ipcwire/spawn/asyncio/batched"):
        assert known[cid].baseline in known
    assert known["ipcwire/udp/blocking"].framing == "one datagram per message"
    assert known["ipcwire/udp/blocking"].overhead == 0
    assert known["ipcwire/fifo/blocking"].framing == "4-byte length prefix"
