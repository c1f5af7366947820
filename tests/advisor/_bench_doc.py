"""Bench reports for the advisor's tests: schema-valid documents with chosen numbers.

The machine and configuration parts are this machine's, from ``ipcwire.bench``; the results
are the numbers a test needs (a virtual machine where every wake-up costs tens of µs).
"""

from __future__ import annotations

from typing import Any

from ipcwire.bench import QUICK, validate
from ipcwire.bench.machine import describe_machine

VM_EXPLANATION = (
    "Virtual machine (kvm) with guest halt-polling off (guest_halt_poll_ns=0): a process that "
    "sleeps in the kernel is woken through the hypervisor, which costs tens of microseconds "
    "per blocking wake-up."
)


MACHINE = describe_machine({"mode": "separate", "cpus": [0, 1]})


def _summary(kind: str, value: float) -> dict[str, Any]:
    costs = {"cpu_us_per_msg": 1.0, "cpu_us_per_msg_a": 0.5, "cpu_us_per_msg_b": 0.5,
             "busy_a": 0.5, "busy_b": 0.5}  # fmt: skip
    if kind == "round_trip":
        return {"p50_us": value, "p90_us": value, "p99_us": value, "p99_9_us": value,
                "mean_us": value, "min_us": value, "p50_spread_us": [value, value],
                "round_trips": 1000, **costs}  # fmt: skip
    return {"msgs_per_s": value / 65536, "bytes_per_s": value, "msgs_per_s_spread": [1.0, 1.0],
            "messages": 1000, **costs}  # fmt: skip


def bench_doc(
    rows: list[tuple[str, str, str, float]],
    *,
    vm: bool = True,
    idle: dict[tuple[str, str], float] | None = None,
) -> dict[str, Any]:
    """A report with one result per row: (scheme, wait, kind, value); round trips at 64 B
    (value: p50 µs), throughput at 64 KiB (value: bytes/s). ``idle``: (scheme, wait) -> p50
    µs of the round trips after 1 ms idle time, for the rows that have them."""
    contenders: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for scheme, wait, kind, value in rows:
        cid = f"ipcwire/{scheme}/blocking/{wait}"
        contenders[cid] = {
            "id": cid, "title": f"ipcwire {scheme}, {wait}", "group": "ipcwire",
            "mechanism": scheme, "api": "blocking", "wait": wait,
            "framing": "4-byte length prefix", "overhead_bytes": 4, "batched": False,
            "baseline": None, "patterns": {}, "note": "", "available": True,
        }  # fmt: skip
        summary = _summary(kind, value)
        after = (idle or {}).get((scheme, wait)) if kind == "round_trip" else None
        if after is not None:
            summary["idle"] = {"gap_us": 1000.0, "p50_us": after, "p50_spread_us": [after, after],
                               "p99_us": 8 * after, "round_trips": 600, "round_trips_min": 200,
                               "p99_firm": True}  # fmt: skip
        results.append({
            "contender": cid, "kind": kind, "size": 64 if kind == "round_trip" else 65536,
            "batch": 0, "status": "ok", "error": None, "repetitions": [],
            "summary": summary, "vs_baseline": None, "vs_fastest": None,
        })  # fmt: skip
    doc = {
        "schema": "ipcwire-bench", "schema_version": 1, "ipcwire_version": "test",
        "command_line": ["ipcwire", "bench", "--json"], "started_at": "2025-01-01T00:00:00+00:00",
        "elapsed_s": 1.0, "config": QUICK.as_dict(), "machine": MACHINE,
        "contenders": list(contenders.values()), "unavailable": [], "results": results,
        "notes": [], "explanations": [VM_EXPLANATION] if vm else [], "verdict": [],
        "rules_of_thumb": [], "targets": [],
    }  # fmt: skip
    assert validate(doc) == [], validate(doc)
    return doc
