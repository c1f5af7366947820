"""The verdict, the rules of thumb checked against this run, and ipcwire's own targets.

Rules of thumb are the numbers people quote about local IPC. Each is checked against the best
measurement of the mechanisms it speaks about; a rule about a mechanism that was not measured
is listed as "not measured", never as held. Latency rules are judged on the round-trip p50
(both directions, from Python), which is stricter than the one-way figures the rules usually
come from; the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ipcwire.bench.report import fmt_bandwidth, fmt_rate
from ipcwire.bench.runner import format_size

__all__ = ["RULES", "Rule", "check_rules", "check_targets", "verdict"]


@dataclass(frozen=True, slots=True)
class Rule:
    """``mechanisms`` (and ``wait`` when given) select the measurements; ``metric`` is
    "round_trip" (best p50 must be under ``threshold`` µs) or "bandwidth" (best bytes/s at
    the largest size must be over ``threshold``); ``only`` means no other mechanism may also
    reach it."""

    text: str
    mechanisms: tuple[str, ...]
    metric: str
    threshold: float
    wait: tuple[str, ...] | None = None
    only: bool = False
    floor: str | None = None  # the C floor to show beside it: a ping-pong kind, or "memcpy"


RULES: Final[tuple[Rule, ...]] = (
    Rule("a lock-free shared-memory ring: round trip under 1 µs", ("shm",), "round_trip", 1.0,
         wait=("spin", "hybrid"), floor="spin"),
    Rule("shared memory with locks (sleeping waits): under 10 µs", ("shm",), "round_trip", 10.0,
         wait=("park",), floor="futex"),
    Rule("Unix domain sockets: under 10 µs", ("unix",), "round_trip", 10.0, floor="unix"),
    Rule("TCP loopback: under 100 µs", ("tcp",), "round_trip", 100.0),
    Rule("gRPC: under 100 µs", ("grpc",), "round_trip", 100.0),
    Rule("REST over HTTP: under 1 ms", ("http",), "round_trip", 1000.0),
    Rule("over 10 GB/s: only shared memory", ("shm",), "bandwidth", 10e9, only=True,
         floor="memcpy"),
    Rule("Unix domain sockets: over 5 GB/s", ("unix",), "bandwidth", 5e9),
    Rule("TCP loopback: over 1 GB/s", ("tcp",), "bandwidth", 1e9),
    Rule("gRPC: over 1 GB/s", ("grpc",), "bandwidth", 1e9),
)  # fmt: skip


def _ok(doc: dict[str, Any], kind: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(result, contender) pairs of successful results of one kind."""
    contenders = {c["id"]: c for c in doc["contenders"]}
    return [
        (r, contenders[r["contender"]])
        for r in doc["results"]
        if r["kind"] == kind and r["status"] == "ok" and r["contender"] in contenders
    ]


def _best_latency(
    doc: dict[str, Any], keep: Callable[[dict[str, Any]], bool], size: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    rows = [(r, c) for r, c in _ok(doc, "round_trip") if keep(c)]
    if size is None and rows:
        size = min(r["size"] for r, _ in rows)
    rows = [(r, c) for r, c in rows if r["size"] == size]
    return min(rows, key=lambda rc: rc[0]["summary"]["p50_us"]) if rows else None


def _best_bandwidth(
    doc: dict[str, Any], keep: Callable[[dict[str, Any]], bool]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    rows = [(r, c) for r, c in _ok(doc, "throughput") if keep(c)]
    return max(rows, key=lambda rc: rc[0]["summary"]["bytes_per_s"]) if rows else None


def _floor(doc: dict[str, Any], kind: str | None) -> float | None:
    floor = doc.get("floor") or {}
    if kind is None or not floor.get("available"):
        return None
    if kind == "memcpy":
        rates = [m["bytes_per_s"] for m in floor.get("memcpy", [])]
        return max(rates) if rates else None
    for rt in floor.get("round_trip", []):
        if rt["kind"] == kind:
            return float(rt["p50_us"])
    return None


def check_rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each rule of thumb beside the number measured here (and the C floor, where there is
    one: what the machine allows without Python)."""
    out = []
    for rule in RULES:

        def keep(c: dict[str, Any], rule: Rule = rule) -> bool:
            return c["mechanism"] in rule.mechanisms and (
                rule.wait is None or c["wait"] in rule.wait
            )

        entry: dict[str, Any] = {
            "rule": rule.text,
            "metric": rule.metric,
            "threshold": rule.threshold,
            "measured": None,
            "by": None,
            "size": None,
            "held": None,
            "floor": _floor(doc, rule.floor),
            "floor_kind": rule.floor,
        }
        if rule.metric == "round_trip":
            best = _best_latency(doc, keep)
            if best is not None:
                r, c = best
                entry.update(measured=r["summary"]["p50_us"], by=c["id"], size=r["size"])
                entry["held"] = entry["measured"] < rule.threshold
        else:
            best = _best_bandwidth(doc, keep)
            if best is not None:
                r, c = best
                entry.update(measured=r["summary"]["bytes_per_s"], by=c["id"], size=r["size"])
                entry["held"] = entry["measured"] > rule.threshold
                if rule.only:
                    other = _best_bandwidth(doc, lambda c: not keep(c))
                    if other is not None and other[0]["summary"]["bytes_per_s"] > rule.threshold:
                        entry["held"] = False
                        entry["also_by"] = other[1]["id"]
        out.append(entry)
    return out


def _find(doc: dict[str, Any], cid: str, kind: str, size: int) -> dict[str, Any] | None:
    for r in doc["results"]:
        if r["contender"] == cid and r["kind"] == kind and r["size"] == size:
            return r if r["status"] == "ok" else None
    return None


def _target(
    name: str,
    value: dict[str, Any] | None,
    reference: dict[str, Any] | None,
    *,
    limit: float,
    at_most: bool,
    unequal: str | None = None,
    floor: bool = False,
) -> dict[str, Any]:
    """A target as a paired ratio (median over repetitions of the per-repetition ratio):
    ``held`` by the median, ``clear`` when every repetition agrees. With ``unequal`` (why the
    two do different work) the ratio is shown but the target is neither held nor missed:
    ``comparable`` is False and ``why`` says why. With ``floor`` (the reference is the C
    floor) a ratio under 1 is a noisy floor, and ``note`` says so."""
    from ipcwire.bench.analysis import paired_ratio

    entry: dict[str, Any] = {
        "target": name,
        "ratio": None,
        "ratio_spread": None,
        "limit": limit,
        "comparison": "at most" if at_most else "at least",
        "held": None,
        "clear": None,
    }
    if value is None or reference is None:
        return entry
    paired = paired_ratio(value, reference)
    if paired is None:
        return entry
    mid, lo, hi = paired
    # how many repetitions the ratio rests on: one is a single measurement, not a median
    entry["repetitions"] = len(
        [1 for _ in zip(value["repetitions"], reference["repetitions"], strict=False)]
    )

    def ok(x: float) -> bool:
        return x <= limit if at_most else x >= limit

    if unequal is not None:
        entry.update(ratio=mid, ratio_spread=[lo, hi], comparable=False, why=unequal)
        return entry
    entry.update(ratio=mid, ratio_spread=[lo, hi], held=ok(mid), clear=ok(lo) == ok(hi))
    if floor and lo < 1.0:
        # Nothing in Python beats the C floor on the same CPUs: a ratio under 1 means the
        # floor came out slow (a VM's wake-up cost drifts), not that the target held.
        below = sum(1 for rep in _per_rep_ratios(value, reference) if rep < 1.0)
        entry["note"] = (
            f"the C floor was not below the measured value in {below} of "
            f"{len(value['repetitions'])} repetitions: the floor was noisy in this run, so "
            f"this says little"
        )
    return entry


def _event_loop_note(doc: dict[str, Any], scheme: str, aio: str, rt: int) -> str | None:
    """What the event loop itself costs here: the raw Python asyncio round trip against the
    raw blocking one, and ipcwire's asyncio against raw asyncio, both paired in this run (a
    ratio the channel cannot get under is the machine's, not ipcwire's)."""
    from ipcwire.bench.analysis import paired_ratio

    raw_aio = _find(doc, f"raw/{scheme}/asyncio", "round_trip", rt)
    raw = _find(doc, f"raw/{scheme}", "round_trip", rt)
    mine = _find(doc, aio, "round_trip", rt)
    mine_blocking = _find(doc, f"ipcwire/{scheme}/blocking", "round_trip", rt)
    if raw_aio is None or raw is None or mine is None or mine_blocking is None:
        return None
    loop = paired_ratio(raw_aio, raw)
    over = paired_ratio(mine, raw_aio)
    under = paired_ratio(mine_blocking, raw)
    if loop is None or over is None or under is None:
        return None
    return (
        f"in this run raw Python's asyncio round trip is {loop[0]:.2f}x its blocking one (the "
        f"event loop's own cost here); ipcwire asyncio is {over[0]:.2f}x raw asyncio, ipcwire "
        f"blocking {under[0]:.2f}x raw blocking"
    )


def _per_rep_ratios(value: dict[str, Any], reference: dict[str, Any]) -> list[float]:
    from ipcwire.bench.analysis import _rep_metric

    return [
        _rep_metric(value, a) / _rep_metric(reference, b)
        for a, b in zip(value["repetitions"], reference["repetitions"], strict=False)
        if _rep_metric(reference, b) > 0
    ]


def check_targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """ipcwire's own promises (each issue's speed targets), as ratios within this run."""
    out: list[dict[str, Any]] = []
    ids = {c["id"] for c in doc["contenders"]}
    rt = 64 if 64 in doc["config"]["round_trip_sizes"] else None
    for scheme in ("unix", "tcp"):
        blocking = f"ipcwire/{scheme}/blocking"
        if blocking not in ids:
            continue
        raw = f"raw/{scheme}"
        if rt is not None:
            out.append(
                _target(
                    f"{scheme}: blocking round trip p50 within 1.1x of raw Python",
                    _find(doc, blocking, "round_trip", rt),
                    _find(doc, raw, "round_trip", rt),
                    limit=1.1,
                    at_most=True,
                )
            )
        for size in doc["config"]["throughput_sizes"]:
            out.append(
                _target(
                    f"{scheme}: per-message send throughput at {format_size(size)} at least "
                    f"raw Python's",
                    _find(doc, blocking, "throughput", size),
                    _find(doc, raw, "throughput", size),
                    limit=1.0,
                    at_most=False,
                )
            )
        if 64 in doc["config"]["throughput_sizes"]:
            zmq = _find(doc, "peer/zmq-ipc", "throughput", 64)
            for api in ("blocking", "asyncio"):
                cid = f"ipcwire/{scheme}/{api}/batched"
                if cid not in ids:
                    continue
                if zmq is not None:
                    name = f"{scheme}: {api} send_many 64 B throughput at least pyzmq ipc's"
                    out.append(
                        _target(name, _find(doc, cid, "throughput", 64), zmq, limit=1.0,
                                at_most=False)
                    )  # fmt: skip
                else:
                    name = f"{scheme}: {api} send_many 64 B throughput at least 3x raw Python's"
                    out.append(
                        _target(
                            name,
                            _find(doc, cid, "throughput", 64),
                            _find(doc, raw, "throughput", 64),
                            limit=3.0,
                            at_most=False,
                        )
                    )
        aio = f"ipcwire/{scheme}/asyncio"
        if aio in ids and rt is not None:
            entry = _target(
                f"{scheme}: asyncio round trip p50 within 1.5x of blocking",
                _find(doc, aio, "round_trip", rt),
                _find(doc, blocking, "round_trip", rt),
                limit=1.5,
                at_most=True,
            )
            if entry["ratio"] is not None:
                note = _event_loop_note(doc, scheme, aio, rt)
                if note is not None:
                    entry["note"] = note
            out.append(entry)
    out.extend(_shm_targets(doc, ids, rt))
    out.extend(_versus_raw_targets(doc, ids, rt))
    return out


# Mechanism issues' targets against their raw baselines: (schemes, round-trip limit, whether
# throughput must be at least the baseline's at every size).
_VERSUS_RAW: Final = (
    (("spawn", "pipe", "fifo", "udp"), 1.25, False),  # processes that talk
    (("ws", "ws+unix", "http", "grpc", "sse+http"), 1.15, True),  # the web stacks
)


def _unequal(doc: dict[str, Any], baseline: str, kind: str) -> str | None:
    """Why rows compared with ``baseline`` in ``kind`` do other work than it (or None)."""
    for c in doc["contenders"]:
        if c["id"] == baseline:
            why = (c.get("unequal") or {}).get(kind)
            return str(why) if why else None
    return None


def _versus_raw_targets(doc: dict[str, Any], ids: set[str], rt: int | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for schemes, limit, throughput in _VERSUS_RAW:
        for scheme in schemes:
            for api in ("blocking", "asyncio"):
                mine = f"ipcwire/{scheme}/{api}"
                raw = f"raw/{scheme}" + ("/asyncio" if api == "asyncio" else "")
                if mine not in ids or raw not in ids:
                    continue
                if rt is not None and _find(doc, raw, "round_trip", rt) is not None:
                    out.append(
                        _target(
                            f"{scheme}: {api} round trip p50 within {limit}x of raw",
                            _find(doc, mine, "round_trip", rt),
                            _find(doc, raw, "round_trip", rt),
                            limit=limit,
                            at_most=True,
                        )
                    )
                if not throughput:
                    continue
                for size in doc["config"]["throughput_sizes"]:
                    if _find(doc, raw, "throughput", size) is None:
                        continue
                    out.append(
                        _target(
                            f"{scheme}: {api} throughput at {format_size(size)} at least raw's",
                            _find(doc, mine, "throughput", size),
                            _find(doc, raw, "throughput", size),
                            limit=1.0,
                            at_most=False,
                            unequal=_unequal(doc, raw, "throughput"),
                        )
                    )
    return out


def _floor_reference(doc: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The C floor's round trip of ``kind`` as a result with one repetition per bench
    repetition (the floor is measured in each), so a ratio to it is paired like the others."""
    floor = doc.get("floor") or {}
    for rt in floor.get("round_trip", []):
        if rt["kind"] == kind and rt.get("p50_per_rep_us"):
            reps = [{"latency_us": {"p50": v}} for v in rt["p50_per_rep_us"]]
            return {"kind": "round_trip", "repetitions": reps}
    return None


def _memcpy_reference(doc: dict[str, Any], size: int, key: str) -> dict[str, Any] | None:
    """memcpy at ``size`` (``key``: "per_rep" one hot buffer, "pool_per_rep" the bench's
    working set) as a throughput result in messages of ``size`` per second."""
    floor = doc.get("floor") or {}
    for m in floor.get("memcpy", []):
        if m["size"] == size and m.get(key):
            return {"kind": "throughput", "repetitions": [{"msgs_per_s": v / size} for v in m[key]]}
    return None


# Back to back, a hybrid wait never gets past its spin phase (0.7 µs, where the futex floor
# sleeps: "0.01x yes"); with idle time between requests it parks and pays the wake-up
# (helper-84: 30 µs p50, 249 µs p99 with 1 ms between requests). So park and hybrid are
# judged on their round trips after idle time, which the bench measures for them; a report
# without those (older, or idle round trips turned off) leaves hybrid not comparable.
_HYBRID_BACK_TO_BACK: Final = (
    "round trips are measured back to back, so hybrid never leaves its spin phase: this "
    "compares spinning with the futex floor's sleeping, not hybrid's wake-up after idle time"
)


def _gap(us: float) -> str:
    """1000.0 -> "1 ms", 250.0 -> "250 µs"."""
    return f"{us / 1000:g} ms" if us >= 1000 else f"{us:g} µs"


def _floor_target(doc: dict[str, Any], policy: str, rt: int) -> dict[str, Any]:
    """shm ``park`` or ``hybrid`` against the C futex ping-pong: on the round trips after
    idle time when the report has them (every round trip of the futex floor sleeps, as these
    do), else back to back (hybrid then not comparable)."""
    from ipcwire.bench.analysis import idle_result

    found = _find(doc, f"ipcwire/shm/blocking/{policy}", "round_trip", rt)
    idle = idle_result(found) if found is not None else None
    if found is not None and idle is not None:
        gap = _gap(found["summary"]["idle"]["gap_us"]) if found["summary"].get("idle") else "idle"
        # like with like: the futex ping-pong after the same idle gap (a CPU that idled wakes
        # slower); a report from before that floor existed has only the back-to-back one
        reference = _floor_reference(doc, "futex/idle")
        against = f"the C futex ping-pong after {gap} idle"
        if reference is None:
            reference, against = _floor_reference(doc, "futex"), "the C futex ping-pong"
        entry = _target(
            f"shm: {policy} round trip after {gap} idle, p50 within 1.2x of {against}",
            idle,
            reference,
            limit=1.2,
            at_most=True,
            floor=True,
        )
        entry["basis"] = "after idle"
        return entry
    entry = _target(
        f"shm: {policy} round trip p50 within 1.2x of the C futex ping-pong",
        found,
        _floor_reference(doc, "futex"),
        limit=1.2,
        at_most=True,
        floor=True,
        unequal=_HYBRID_BACK_TO_BACK if policy == "hybrid" else None,
    )
    entry["basis"] = "back to back"
    return entry


def _shm_targets(doc: dict[str, Any], ids: set[str], rt: int | None) -> list[dict[str, Any]]:
    """The shared-memory issue's ratios, each within this run."""
    out: list[dict[str, Any]] = []
    spin = "ipcwire/shm/blocking/spin"
    if spin not in ids:
        return out
    if rt is not None:
        for ref, limit, what in (
            ("raw/shm", 0.5, "a pure-Python mmap ring (raw/shm)"),
            ("peer/iceoryx2", 0.2, "iceoryx2's Python bindings"),
        ):
            if ref in ids:
                out.append(
                    _target(
                        f"shm: spin round trip p50 at most {limit}x {what}",
                        _find(doc, spin, "round_trip", rt),
                        _find(doc, ref, "round_trip", rt),
                        limit=limit,
                        at_most=True,
                    )
                )
        for policy in ("park", "hybrid"):
            if f"ipcwire/shm/blocking/{policy}" in ids:
                out.append(_floor_target(doc, policy, rt))
    if 64 in doc["config"]["throughput_sizes"] and "raw/shm" in ids:
        for cid, how in ((spin, "per message"), (spin + "/batched", "send_many")):
            if cid in ids:
                out.append(
                    _target(
                        f"shm: spin 64 B throughput ({how}) at least 2x the Python ring",
                        _find(doc, cid, "throughput", 64),
                        _find(doc, "raw/shm", "throughput", 64),
                        limit=2.0,
                        at_most=False,
                    )
                )
    loan = spin + "/loan"
    big = 1 << 20
    if loan in ids and big in doc["config"]["throughput_sizes"]:
        for key, what in (
            ("per_rep", "single-core memcpy (one cache-hot buffer)"),
            ("pool_per_rep", "memcpy of the same 16 MiB of messages"),
        ):
            out.append(
                _target(
                    f"shm: 1 MiB throughput (loan + view) at least 0.85x {what}",
                    _find(doc, loan, "throughput", big),
                    _memcpy_reference(doc, big, key),
                    limit=0.85,
                    at_most=False,
                )
            )
    return out


def _is(cid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda c: bool(c["id"] == cid)


def _msgs(v: float) -> str:
    """Messages per second: "1.46 M msgs/s", "512 k msgs/s", "533 msgs/s" (large messages
    read "0.00 M msgs/s" before)."""
    return fmt_rate(v).replace("/s", " msgs/s")


def _us(v: float) -> str:
    return f"{v:.1f} µs" if v >= 10 else f"{v:.2f} µs"


def _idle_verdict(doc: dict[str, Any]) -> list[str]:
    """One line on the round trips after idle time, when measured: what a service that is
    not saturated gets from each wait policy (back to back, hybrid looks like spin)."""
    rows = [(r, c) for r, c in _ok(doc, "round_trip") if (r["summary"] or {}).get("idle")]
    if not rows:
        return []
    rows.sort(key=lambda rc: rc[0]["summary"]["idle"]["p50_us"])
    gap = _gap(rows[0][0]["summary"]["idle"]["gap_us"])
    parts = [
        f"{c['title']} {_us(r['summary']['idle']['p50_us'])} (back to back "
        f"{_us(r['summary']['p50_us'])})"
        for r, c in rows
    ]
    return [
        f"Round trip p50 after {gap} idle between requests (a service that is not "
        f"saturated): {'; '.join(parts)}. Back to back, a hybrid wait never leaves its spin "
        f"phase; after idle time it has parked."
    ]


def verdict(doc: dict[str, Any]) -> list[str]:
    """A few sentences a reader can act on."""
    lines: list[str] = []
    best = _best_latency(doc, lambda c: True)
    if best is not None:
        r, c = best
        lines.append(
            f"Fastest round trip ({format_size(r['size'])}): {c['title']}, "
            f"{_us(r['summary']['p50_us'])} (p50)."
        )
        if c["wait"] != "park":
            sleeper = _best_latency(doc, lambda c: c["wait"] == "park", r["size"])
            if sleeper is not None:
                lines.append(
                    f"Fastest that sleeps when idle: {sleeper[1]['title']}, "
                    f"{_us(sleeper[0]['summary']['p50_us'])}."
                )
    lines.extend(_idle_verdict(doc))
    sizes = sorted({r["size"] for r, _ in _ok(doc, "throughput")})
    for size in sizes[:1] + sizes[-1:] if len(sizes) > 1 else sizes:
        rows = [(r, c) for r, c in _ok(doc, "throughput") if r["size"] == size]
        r, c = max(rows, key=lambda rc: rc[0]["summary"]["msgs_per_s"])
        s = r["summary"]
        lines.append(
            f"Highest throughput at {format_size(size)}: {c['title']}, "
            f"{_msgs(s['msgs_per_s'])} ({fmt_bandwidth(s['bytes_per_s'])})."
        )
        single = [(r, c) for r, c in rows if not c["batched"]]
        if single and c["batched"]:
            r, c = max(single, key=lambda rc: rc[0]["summary"]["msgs_per_s"])
            lines.append(
                f"  One message per call: {c['title']}, {_msgs(r['summary']['msgs_per_s'])}."
            )
    unequal: dict[str, list[str]] = {}
    for c in doc["contenders"]:
        if c["group"] != "ipcwire" or c["batched"]:
            continue
        parts = []
        for r in doc["results"]:
            if r["contender"] != c["id"]:
                continue
            what = "round trip" if r["kind"] == "round_trip" else "throughput"
            if r.get("vs_baseline_unequal"):
                parts.append(f"{what} {format_size(r['size'])} not comparable")
                why = r["vs_baseline_unequal"]["why"]
                unequal.setdefault(why, [])
                if c["title"] not in unequal[why]:
                    unequal[why].append(c["title"])
            elif r["vs_baseline"] is not None:
                parts.append(f"{what} {format_size(r['size'])} {r['vs_baseline']:.2f}x")
        if parts:
            lines.append(f"{c['title']} vs raw Python: " + ", ".join(parts) + ".")
    for why, titles in unequal.items():
        lines.append(
            f"Not comparable with their raw baseline ({', '.join(titles)}): {why}. The ratio "
            f"is shown in brackets in the table and counts for no target."
        )
    for kind in ("unix", "pipe"):
        c_floor = _floor(doc, kind)
        raw = _best_latency(doc, _is(f"raw/{kind}"))
        mine = _best_latency(doc, _is(f"ipcwire/{kind}/blocking"))
        if c_floor is None or raw is None or mine is None or raw[0]["size"] != 64:
            continue
        if c_floor >= mine[0]["summary"]["p50_us"] and c_floor <= raw[0]["summary"]["p50_us"]:
            lines.append(
                f"{kind} round trip, 64 B: C floor {_us(c_floor)}, raw Python "
                f"{_us(raw[0]['summary']['p50_us'])}, ipcwire "
                f"{_us(mine[0]['summary']['p50_us'])}: the C floor was not below ipcwire's "
                f"time in this run (a noisy floor: the wake-up cost varied more than the "
                f"interpreter's share), so no share is given."
            )
            continue
        if c_floor > raw[0]["summary"]["p50_us"]:
            lines.append(
                f"{kind} round trip, 64 B: the C floor ({_us(c_floor)}) came out slower than "
                f"raw Python ({_us(raw[0]['summary']['p50_us'])}): on this machine, in this "
                f"run, the wake-up dominates so much that the interpreter's share is lost in "
                f"the noise."
            )
            continue
        lines.append(
            f"{kind} round trip, 64 B: C floor {_us(c_floor)}, raw Python "
            f"{_us(raw[0]['summary']['p50_us'])}, ipcwire {_us(mine[0]['summary']['p50_us'])}: "
            f"the machine takes {c_floor / mine[0]['summary']['p50_us']:.0%} of ipcwire's time."
        )
    failed = [r for r in doc["results"] if r["status"] == "failed"]
    if failed:
        lines.append(f"{len(failed)} measurement(s) failed; see the notes.")
    return lines
