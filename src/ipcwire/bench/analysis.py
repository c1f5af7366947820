"""From raw repetitions to the report document: summaries, ratios, verdict, rules, targets.

The document (a dict of plain JSON data) is what ``--json`` writes and what the table, the
plot and the HTML page render; its shape is :data:`ipcwire.bench.schema.SCHEMA`.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, Final

import ipcwire
from ipcwire.bench.machine import describe_machine, explain, implementation
from ipcwire.bench.runner import Measurement, RunOutput, format_size
from ipcwire.bench.stats import median, ratio, spread

__all__ = [
    "MIN_SAMPLES",
    "SCHEMA_VERSION",
    "build_document",
    "idle_result",
    "idle_summary",
    "not_comparable",
    "refresh",
    "summarize",
    "tail_is_firm",
]

SCHEMA_VERSION: Final = 1


# Samples a repetition needs before its percentile is a measured value: a p99 of 12 round
# trips is the slowest but one, not a 99th percentile.
MIN_SAMPLES: Final = {"p99": 100, "p99_9": 1000}


def tail_is_firm(entry: dict[str, Any], which: str) -> bool:
    """Whether every repetition of a round-trip result had enough samples for ``which``
    ("p99" or "p99_9"); reports without the count (older) are read from the repetitions."""
    s = entry.get("summary") or {}
    fewest = s.get("round_trips_min")
    if fewest is None:
        counts = [rep.get("round_trips") for rep in entry.get("repetitions") or []]
        fewest = min((c for c in counts if c is not None), default=None)
    return fewest is not None and fewest >= MIN_SAMPLES[which]


def idle_summary(reps: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The round trips after idle time of a result's repetitions, summarised like the
    back-to-back ones (median of the repetitions' percentiles, min-max of their p50s);
    None unless every repetition has them."""
    idle: list[dict[str, Any]] = [rep["idle"] for rep in reps if rep.get("idle")]
    if not idle or len(idle) != len(reps):
        return None
    p50s = spread(x["latency_us"]["p50"] for x in idle)
    fewest = min(int(x["round_trips"]) for x in idle)
    return {
        "gap_us": median(x["gap_us"] for x in idle),
        "p50_us": p50s.center,
        "p50_spread_us": [p50s.low, p50s.high],
        "p90_us": median(x["latency_us"]["p90"] for x in idle),
        "p99_us": median(x["latency_us"]["p99"] for x in idle),
        "round_trips": sum(int(x["round_trips"]) for x in idle),
        "round_trips_min": fewest,
        "p99_firm": fewest >= MIN_SAMPLES["p99"],
    }


def idle_result(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A result's round trips after idle time as a result of their own (one repetition per
    repetition, p50 as the metric), so targets can pair it with the C floor; None when it
    has none."""
    reps = entry.get("repetitions") or []
    if entry.get("kind") != "round_trip" or not reps or any(not r.get("idle") for r in reps):
        return None
    return {
        "kind": "round_trip",
        "size": entry["size"],
        "repetitions": [{"latency_us": r["idle"]["latency_us"]} for r in reps],
    }


def _median_of(reps: Sequence[dict[str, Any]], *path: str) -> float:
    values = []
    for rep in reps:
        value: Any = rep
        for key in path:
            value = value[key]
        values.append(float(value))
    return median(values)


def _side_costs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    def per_msg(side: dict[str, Any]) -> float:
        return side["cpu_s"] / side["count"] * 1e6 if side["count"] else 0.0

    def busy(side: dict[str, Any]) -> float:
        return side["cpu_s"] / side["wall_s"] if side["wall_s"] > 0 else 0.0

    return {
        "cpu_us_per_msg": {"a": per_msg(a), "b": per_msg(b), "total": per_msg(a) + per_msg(b)},
        "busy": {"a": busy(a), "b": busy(b)},
    }


def _rep(m: Measurement, raw: dict[str, Any]) -> dict[str, Any]:
    a, b = raw["a"], raw["b"]
    out = _side_costs(a, b)
    out["elapsed_s"] = raw.get("elapsed_s")  # wall time of the whole measurement, set-up included
    out["setup_s"] = raw.get("setup_s")  # the part outside warm-up and measured phase
    out["phases"] = {"a": a.get("phases"), "b": b.get("phases")}  # open, accept, close times
    if m.kind == "round_trip":
        lat = b["latency_ns"]
        out["round_trips"] = b["count"]
        out["latency_us"] = {k: v / 1000.0 for k, v in lat.items() if k != "count"}
        idle = b.get("idle_latency_ns")
        if idle:
            # round trips each made after gap_us of idle time (before WARM, timed apart)
            out["idle"] = {
                "gap_us": b["gap_s"] * 1e6,
                "round_trips": int(idle["count"]),
                "seconds": raw.get("idle_s"),
                "latency_us": {k: v / 1000.0 for k, v in idle.items() if k != "count"},
            }
    else:
        sink, source = (b, a) if b.get("role") == "sink" else (a, b)
        # Received between WARM and END, but never faster than it was fed: a contender that
        # queues everything and delivers it in one burst at the end is timed by its sender.
        seconds = max(sink["wall_s"], source["wall_s"])
        rate = sink["count"] / seconds if seconds > 0 else 0.0
        out["messages"] = sink["count"]
        out["seconds"] = seconds
        out["receiver_s"] = sink["wall_s"]
        out["sender_s"] = source["wall_s"]
        out["msgs_per_s"] = rate
        out["bytes_per_s"] = rate * m.size
    return out


def summarize(m: Measurement) -> dict[str, Any]:
    """One measurement as a result entry (before ratios are added)."""
    reps = [_rep(m, raw) for raw in m.reps]
    entry: dict[str, Any] = {
        "contender": m.contender.id,
        "kind": m.kind,
        "size": m.size,
        "batch": m.batch,
        "status": "failed" if m.error is not None or not reps else "ok",
        "error": m.error if m.error is not None else (None if reps else "no repetition ran"),
        "detail": m.detail,
        "repetitions": reps,
        "summary": None,
        "vs_baseline": None,
        "vs_fastest": None,
    }
    if entry["status"] != "ok":
        return entry
    costs = {
        "cpu_us_per_msg": _median_of(reps, "cpu_us_per_msg", "total"),
        "cpu_us_per_msg_a": _median_of(reps, "cpu_us_per_msg", "a"),
        "cpu_us_per_msg_b": _median_of(reps, "cpu_us_per_msg", "b"),
        "busy_a": _median_of(reps, "busy", "a"),
        "busy_b": _median_of(reps, "busy", "b"),
    }
    if m.kind == "round_trip":
        p50s = spread(rep["latency_us"]["p50"] for rep in reps)
        entry["summary"] = {
            "p50_us": p50s.center,
            "p90_us": _median_of(reps, "latency_us", "p90"),
            "p99_us": _median_of(reps, "latency_us", "p99"),
            "p99_9_us": _median_of(reps, "latency_us", "p99_9"),
            "mean_us": _median_of(reps, "latency_us", "mean"),
            "min_us": min(rep["latency_us"]["min"] for rep in reps),
            "p50_spread_us": [p50s.low, p50s.high],
            "round_trips": sum(rep["round_trips"] for rep in reps),
            # the fewest round trips of any repetition: a tail percentile of fewer samples
            # than it needs (p99: 100, p99.9: 1000) is not shown as a number
            "round_trips_min": min(rep["round_trips"] for rep in reps),
            **costs,
        }
        entry["summary"]["p99_firm"] = tail_is_firm(entry, "p99")
        entry["summary"]["p99_9_firm"] = tail_is_firm(entry, "p99_9")
        idle = idle_summary(reps)
        if idle is not None:
            entry["summary"]["idle"] = idle
    else:
        rates = spread(rep["msgs_per_s"] for rep in reps)
        entry["summary"] = {
            "msgs_per_s": rates.center,
            "bytes_per_s": rates.center * m.size,
            "msgs_per_s_spread": [rates.low, rates.high],
            "messages": sum(rep["messages"] for rep in reps),
            **costs,
        }
    return entry


def _rep_metric(entry: dict[str, Any], rep: dict[str, Any]) -> float:
    if entry["kind"] == "round_trip":
        return float(rep["latency_us"]["p50"])
    return float(rep["msgs_per_s"])


def paired_ratio(
    entry: dict[str, Any], reference: dict[str, Any]
) -> tuple[float, float, float] | None:
    """Median, min and max over repetitions of (this repetition's value / the reference's in
    the same repetition). Repetitions are interleaved, so pairing them cancels most of the
    drift of a shared machine. None when either has no repetitions."""
    pairs = list(zip(entry["repetitions"], reference["repetitions"], strict=False))
    ratios = sorted(
        _rep_metric(entry, a) / _rep_metric(reference, b)
        for a, b in pairs
        if _rep_metric(reference, b) > 0
    )
    if not ratios:
        return None
    return median(ratios), ratios[0], ratios[-1]


def metric(entry: dict[str, Any]) -> float | None:
    """The headline number of a result: round-trip p50 (µs) or messages per second."""
    s = entry.get("summary")
    if not s:
        return None
    value = s["p50_us"] if entry["kind"] == "round_trip" else s["msgs_per_s"]
    return float(value)


def not_comparable(
    contender: dict[str, Any], baseline: dict[str, Any] | None, kind: str
) -> str | None:
    """Why ``contender``'s ratio to ``baseline`` in ``kind`` does not compare equal work
    (None: it does). The baseline says where it does other work (``unequal``); and a row
    that sleeps when idle is not compared with one that spins (ipcwire shm park or hybrid
    against the spinning Python ring: "18.53x" compared a futex wake-up with a busy poll)."""
    if baseline is None:
        return None
    wait, theirs = contender.get("wait"), baseline.get("wait")
    if wait and theirs and wait != theirs:
        how = {
            "park": "sleeps in the kernel when idle",
            "hybrid": "spins briefly, then sleeps in the kernel",
            "spin": "busy-polls",
        }
        return (
            f"a {wait} row ({how.get(str(wait), wait)}) against a {theirs} baseline "
            f"({how.get(str(theirs), theirs)}) compares waiting policies, not code; shm's park "
            f"and hybrid rows are judged against the C futex floor instead (targets)"
        )
    why = (baseline.get("unequal") or {}).get(kind)
    return str(why) if why else None


def _add_ratios(results: list[dict[str, Any]], contenders: dict[str, dict[str, Any]]) -> None:
    by_key = {(r["contender"], r["kind"], r["size"]): r for r in results}
    for r in results:
        value = metric(r)
        if value is None:
            continue
        base_id = contenders[r["contender"]]["baseline"]
        if base_id is not None and base_id != r["contender"]:
            base = by_key.get((base_id, r["kind"], r["size"]))
            if base is not None and base["status"] == "ok":
                paired = paired_ratio(r, base)
                why = not_comparable(contenders[r["contender"]], contenders.get(base_id), r["kind"])
                if paired is not None and why is not None:
                    # shown, marked, never read as a ratio: the two did different work
                    mid, lo, hi = paired
                    r["vs_baseline_unequal"] = {"ratio": mid, "spread": [lo, hi], "why": why}
                elif paired is not None:
                    r["vs_baseline"], lo, hi = paired
                    r["vs_baseline_spread"] = [lo, hi]
        peers = [metric(x) for x in results if x["kind"] == r["kind"] and x["size"] == r["size"]]
        values = [v for v in peers if v is not None]
        best = min(values) if r["kind"] == "round_trip" else max(values)
        r["vs_fastest"] = ratio(value, best)


def build_document(out: RunOutput, command_line: Sequence[str]) -> dict[str, Any]:
    """The whole report as plain data (see :mod:`ipcwire.bench.schema`)."""
    machine = describe_machine(out.pinning)
    machine["load_average_after"] = machine["load_average"]
    if out.load_before is not None:
        machine["load_average"] = out.load_before  # what the machine was doing before
    contenders = {c.id: {**c.describe(), "available": True} for c in out.contenders}
    for cid, reason in out.unavailable.items():
        contenders[cid] = {"id": cid, "available": False, "unavailable_reason": reason}
    results = [summarize(m) for m in out.measurements]
    # A mechanism that turned out unavailable here was not measured at all: drop what the
    # plan said about how it would be ("clipboard: unreliable, so only round trips are
    # measured", then "not measured: no clipboard here").
    measured = {c.mechanism for c in out.contenders if c.group == "ipcwire"}
    gone = {cid.split("/")[1] for cid in out.unavailable if cid.startswith("ipcwire/")}
    notes = [
        n for n in out.notes
        if n.partition(": ")[0] not in gone - measured or "not measured" in n
    ]  # fmt: skip
    by_reason: dict[str, list[str]] = {}
    for cid, why in out.unavailable.items():
        by_reason.setdefault(why, []).append(cid)
    notes += [f"{', '.join(ids)}: not measured: {why}" for why, ids in by_reason.items()]
    for r in results:
        if r["status"] == "failed":
            title = contenders[r["contender"]].get("title", r["contender"])
            what = "round trip" if r["kind"] == "round_trip" else "throughput"
            notes.append(f"{title}, {what} {format_size(r['size'])}: FAILED: {r['error']}")

    def iso(t: float) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")

    doc: dict[str, Any] = {
        "schema": "ipcwire-bench",
        "schema_version": SCHEMA_VERSION,
        "ipcwire_version": ipcwire.__version__,
        "command_line": list(command_line),
        "started_at": iso(out.started),
        "elapsed_s": round(out.finished - out.started, 3),
        "config": out.config.as_dict(),
        "machine": machine,
        "contenders": [c for c in contenders.values() if c.get("available")],
        "unavailable": [c for c in contenders.values() if not c.get("available")],
        "results": results,
        "notes": notes,
        "explanations": explain(machine),
        "floor": out.floor or {"available": False, "reason": "not measured (--no-floor)"},
        "implementation": _implementation(out),
    }
    return refresh(doc)


def _implementation(out: RunOutput) -> dict[str, Any]:
    """Which code paths the workers ran (each says in its hello; this process's view when
    they did not)."""
    for hello in out.pinning.get("workers") or []:
        if isinstance(hello, dict) and hello.get("implementation"):
            return dict(hello["implementation"])
    return implementation()


def refresh(doc: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute what is derived from the measurements: ratios, verdict, rules of thumb,
    targets. ``--load`` calls it, so a saved report is read with the current analysis."""
    from ipcwire.bench.rules import check_rules, check_targets, verdict

    contenders = {c["id"]: c for c in doc["contenders"]}
    for r in doc["results"]:
        r["vs_baseline"] = r["vs_fastest"] = None
        r.pop("vs_baseline_spread", None)
        r.pop("vs_baseline_unequal", None)
    _add_ratios(doc["results"], contenders)
    doc["verdict"] = verdict(doc)
    doc["rules_of_thumb"] = check_rules(doc)
    doc["targets"] = check_targets(doc)
    return doc
