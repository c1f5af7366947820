"""What the bench measures comes from the registry and from registered contenders."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Any

import pytest

import ipcwire
from ipcwire.bench import BenchConfig, Contender, register_contender, unregister_contender
from ipcwire.bench.builtin.raw import unix_side_a, unix_side_b
from ipcwire.bench.runner import batch_for, plan
from ipcwire.bench.schema import validate
from ipcwire.cli.bench import parse_size


def test_every_usable_registered_mechanism_gets_ipcwire_contenders() -> None:
    notes: list[str] = []
    chosen, _, _ = plan(BenchConfig(peers=False), notes)
    ids = {c.id for c in chosen}
    for spec in ipcwire.mechanisms():
        mentioned = any(n.startswith(f"{spec.scheme}:") for n in notes)
        # one row per wait policy where the mechanism has several (shm: .../blocking/spin)
        measured = any(i.startswith(f"ipcwire/{spec.scheme}/blocking") for i in ids)
        assert measured or mentioned, f"{spec.scheme} is neither measured nor explained"
    assert "ipcwire/unix/blocking/batched" in ids
    assert "ipcwire/tcp/blocking" in ids


def test_mechanism_filter_keeps_baselines_and_peers_of_that_mechanism() -> None:
    chosen, _, measurements = plan(BenchConfig(mechanisms=("tcp",)), [])
    assert {c.mechanism for c in chosen} == {"tcp"}
    assert {"raw/tcp", "peer/zmq-tcp"} <= {c.id for c in chosen}
    assert all(m.size in (64, 65536) for m in measurements)


def test_registered_contender_joins_the_plan() -> None:
    mine = Contender(
        id="test/registered",
        title="registered in a test",
        group="peer",
        mechanism="unix",
        api="blocking",
        side_a=unix_side_a,
        side_b=unix_side_b,
        kinds=("round_trip",),
    )
    register_contender(mine)
    try:
        chosen, _, measurements = plan(BenchConfig(only=("test/registered",)), [])
        assert chosen == [mine]
        assert [(m.kind, m.size) for m in measurements] == [("round_trip", 64)]
        with pytest.raises(ValueError, match="already registered"):
            register_contender(Contender(**{**_fields(mine), "title": "another"}))
    finally:
        unregister_contender("test/registered")
    assert plan(BenchConfig(only=("test/registered",)), [])[0] == []


def _fields(c: Contender) -> dict[str, Any]:
    return {name: getattr(c, name) for name in Contender.__dataclass_fields__}


def test_unavailable_peer_is_a_note_not_a_failure() -> None:
    ghost = Contender(
        id="test/ghost",
        title="a peer that is not installed",
        group="peer",
        mechanism="unix",
        api="blocking",
        side_a=unix_side_a,
        side_b=unix_side_b,
        requires=("surely_not_an_installed_module_xyz",),
    )
    _, unavailable, measurements = plan(BenchConfig(only=("test/ghost",)), [], [ghost])
    assert "surely_not_an_installed_module_xyz" in unavailable["test/ghost"]
    assert measurements == []


def test_batches_divide_the_pool_and_stay_bounded() -> None:
    assert batch_for(64) == 64
    assert batch_for(65536) == 64
    assert batch_for(1 << 20) == 4
    assert batch_for(16 << 20) == 1


def test_sizes_parse_with_binary_units() -> None:
    assert parse_size("64") == 64
    assert parse_size("4K") == 4096
    assert parse_size("64KiB") == 65536
    assert parse_size("1M") == 1 << 20


def test_validator_reports_missing_and_mistyped_fields() -> None:
    doc: dict[str, Any] = {"schema": "ipcwire-bench", "schema_version": 1}
    errors = validate(doc)
    assert any("missing 'results'" in e for e in errors)
    good = _minimal_document()
    assert validate(good) == []
    bad = copy.deepcopy(good)
    bad["results"][0]["size"] = "64"
    assert any("results[0].size" in e for e in validate(bad))
    bad = copy.deepcopy(good)
    bad["results"][0]["summary"] = {"p50_us": 1.0}
    assert any("missing 'p99_us'" in e for e in validate(bad))


def _minimal_document() -> dict[str, Any]:
    summary = {
        "p50_us": 30.0,
        "p90_us": 40.0,
        "p99_us": 50.0,
        "p99_9_us": 60.0,
        "mean_us": 31.0,
        "min_us": 20.0,
        "p50_spread_us": [29.0, 31.0],
        "round_trips": 100,
        "cpu_us_per_msg": 10.0,
        "cpu_us_per_msg_a": 5.0,
        "cpu_us_per_msg_b": 5.0,
        "busy_a": 0.4,
        "busy_b": 0.4,
    }
    return {
        "schema": "ipcwire-bench",
        "schema_version": 1,
        "ipcwire_version": "0",
        "command_line": ["ipcwire", "bench"],
        "started_at": "2024-01-01T00:00:00+00:00",
        "elapsed_s": 1.0,
        "config": BenchConfig().as_dict(),
        "machine": {
            "cpu_model": None,
            "logical_cpus": 2,
            "usable_cpus": [0, 1],
            "system": "Linux",
            "kernel": "6",
            "machine": "x86_64",
            "python": "CPython 3.11",
            "virtualisation": {},
            "cpuidle": {},
            "pinning": {"mode": "none"},
            "pipe_buffer_bytes": None,
            "pipe_max_bytes": None,
            "socket_buffer_bytes": {},
            "mqueue": {},
            "dev_shm_bytes": None,
            "load_average": None,
        },
        "contenders": [
            {
                "id": "raw/unix",
                "title": "raw",
                "group": "baseline",
                "mechanism": "unix",
                "api": "blocking",
                "wait": "park",
                "framing": "4 bytes",
                "overhead_bytes": 4,
                "batched": False,
                "baseline": None,
                "patterns": {},
                "note": "",
                "available": True,
            }
        ],
        "unavailable": [],
        "results": [
            {
                "contender": "raw/unix",
                "kind": "round_trip",
                "size": 64,
                "batch": 0,
                "status": "ok",
                "error": None,
                "repetitions": [],
                "summary": summary,
                "vs_baseline": None,
                "vs_fastest": 1.0,
            }
        ],
        "notes": [],
        "explanations": [],
        "verdict": [],
        "rules_of_thumb": [],
        "targets": [],
    }


def test_compared_measurements_run_back_to_back() -> None:
    import random

    from ipcwire.bench.runner import interleave

    _, _, measurements = plan(BenchConfig(mechanisms=("unix", "tcp"), peers=True), [])
    order = interleave(measurements, random.Random(7))
    assert sorted(id(m) for m in order) == sorted(id(m) for m in measurements)
    # Each (root baseline, kind, size) block is contiguous: once left, never seen again.
    by_id = {m.contender.id: m.contender for m in measurements}

    def root(cid: str) -> str:
        c = by_id[cid]
        while c.baseline is not None and c.baseline in by_id:
            c = by_id[c.baseline]
        return c.id

    keys = [(root(m.contender.id), m.kind, m.size) for m in order]
    finished: set[tuple[str, str, int]] = set()
    for previous, current in itertools.pairwise(keys):
        if current != previous:
            finished.add(previous)
            assert current not in finished
    assert ("raw/unix", "throughput", 64) in keys
    blocking = keys.index(("raw/unix", "throughput", 64))
    ids = [m.contender.id for m in order[blocking : blocking + keys.count(keys[blocking])]]
    assert {"raw/unix", "ipcwire/unix/blocking", "ipcwire/unix/asyncio", "peer/zmq-ipc"} <= set(ids)


def test_floor_is_measured_on_the_workers_cpus() -> None:
    """The floor's ping-pong runs on the CPUs the workers are pinned to and says so; on one
    CPU (``--pin same``) the spin kind is left out with a note instead of burning time slices."""
    import os

    from ipcwire.bench.floor import combine_floors, measure_floor

    pytest.importorskip("ipcwire._ext._native")
    cpu = sorted(os.sched_getaffinity(0))[0]
    floor = measure_floor((4096,), scale=0.05, cpus=(cpu, cpu))
    assert floor["available"]
    assert floor["cpus"] == [cpu, cpu]
    kinds = {rt["kind"] for rt in floor["round_trip"]}
    assert "spin" not in kinds
    assert {"futex", "unix", "pipe"} <= kinds
    assert any(n.startswith("spin: not measured on one CPU") for n in floor["notes"])
    assert combine_floors([floor, floor])["cpus"] == [cpu, cpu]


def test_quick_batches_at_64_bytes_only_and_full_at_every_size() -> None:
    from ipcwire.bench.runner import FULL, QUICK

    def batched(config: BenchConfig) -> set[int]:
        _, _, ms = plan(config, [])
        return {m.size for m in ms if m.contender.batched}

    unix = ("unix",)
    assert batched(dataclasses.replace(QUICK, mechanisms=unix)) == {64}
    assert batched(dataclasses.replace(FULL, mechanisms=unix)) == set(FULL.throughput_sizes)
    _, _, ms = plan(dataclasses.replace(QUICK, mechanisms=unix), [])
    plain = {m.size for m in ms if m.kind == "throughput" and not m.contender.batched}
    assert plain == set(QUICK.throughput_sizes)  # per-message rows keep every size
