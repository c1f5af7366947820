"""``ipcwire choose --bench`` reads a wait-policy row's round trips after idle time.

Back to back, shm's ``hybrid`` wait never leaves its spin phase (0.70 µs), so choose
recommended ``shm://app?policy=hybrid`` for "under 10 µs"; a service that is not saturated
gets its wake-up after parking (30 µs with 1 ms between requests). Documents built here, no
timing.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.advisor._bench_doc import bench_doc
from tests.advisor.test_choose_cli import choose_json

from ipcwire.advisor.evidence import BenchResults

_ROWS = [
    ("unix", "park", "round_trip", 45.0),
    ("shm", "spin", "round_trip", 0.8),
    ("shm", "hybrid", "round_trip", 0.7),
    ("shm", "park", "round_trip", 40.0),
]
_IDLE = {("shm", "spin"): 0.9, ("shm", "hybrid"): 30.0, ("shm", "park"): 42.0}


def test_evidence_uses_the_round_trip_after_idle_time_when_present() -> None:
    bench = BenchResults(bench_doc(_ROWS, idle=_IDLE), "results.json")
    hybrid = bench.round_trip("shm", lambda w: w == "hybrid")
    assert hybrid is not None
    assert hybrid.value == 30.0 and hybrid.idle_gap_us == 1000.0 and hybrid.back_to_back == 0.7
    assert not hybrid.meets(10.0)
    assert hybrid.text() == (
        "round trip p50 30.0 µs after 1 ms idle at 64 B (back to back 0.70 µs) "
        "(ipcwire/shm/blocking/hybrid)"
    )
    assert hybrid.as_dict()["after_idle_us"] == 1000.0
    unix = bench.round_trip("unix", lambda w: True)
    assert unix is not None and unix.idle_gap_us is None and unix.value == 45.0
    # a report without idle round trips reads as before
    old = BenchResults(bench_doc(_ROWS), "old.json").round_trip("shm", lambda w: w == "hybrid")
    assert old is not None and old.value == 0.7 and "idle" not in old.text()


def test_choose_no_longer_recommends_hybrid_for_under_10us_on_back_to_back_numbers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(bench_doc(_ROWS, idle=_IDLE)))
    data = choose_json("--latency", "10us", "--bench", str(path))
    rec = data["recommended"]
    assert not (rec["scheme"] == "shm" and rec["wait"] == "hybrid" and rec["meets_requirements"])
    claims = [
        claim
        for cand in [data["recommended"], data["runner_up"], *data["others"]]
        if cand
        for claim in cand["measured"]
        if claim["contender"] == "ipcwire/shm/blocking/hybrid"
    ]
    assert claims, data
    for claim in claims:
        assert claim["value"] == 30.0 and claim["meets"] is False
        assert "after 1 ms idle" in claim["text"] and "back to back 0.70 µs" in claim["text"]
    # with spinning allowed, spin still meets it after idle time (it never sleeps)
    data = choose_json("--latency", "10us", "--idle-sleep", "no", "--bench", str(path))
    rec = data["recommended"]
    assert (rec["scheme"], rec["wait"], rec["meets_requirements"]) == ("shm", "spin", True)
    assert "after 1 ms idle" in rec["because"]
