"""The machine's floor: what C achieves here, with no Python, from ipcwire's compiled extension.

``ipcwire._ext._native.floor_pingpong(kind, iterations, size)`` forks a child pinned to another
CPU and returns round-trip nanoseconds of a C ping-pong (``spin``: shared memory, busy-polling;
``futex``; ``eventfd``: what ipcwire's shared-memory ``park`` policy did before its doorbells
became socketpairs; ``unix``: a socketpair; ``pipe``; ``futex/idle``: the futex ping-pong with
the bench's idle gap before each round trip, the floor of the shm rows "after idle"), and
``memcpy_bandwidth(size, iterations)`` bytes per second. They are measured in the parent once
per repetition (the workers idle meanwhile), combined like every other number (median of the
repetitions' medians, min-max spread), and shown beside the Python numbers: the gap between a
mechanism's C floor and its Python row is the interpreter's share, the floor itself is the
machine's (a VM without halt-polling puts the parked floors in the tens of µs).
Without the extension (a pure-Python install) the section says so.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

from ipcwire.bench.payload import Pool
from ipcwire.bench.stats import median, summarize_samples

__all__ = ["FLOOR_KINDS", "combine_floors", "measure_floor"]

# The kinds that sleep run for about as long as a Python row's measured phase (10000 round
# trips of ~40 us: 0.4 s, 0.2 s at the bench's scale of 0.5), in steady state like those rows,
# and before the spinning kind: a short run straight after both CPUs busy-polled measured a
# transient (on the reference VM futex read 31-38 us over 1000 round trips after spinning, and
# 44-48 us over 10000), which is not the wake-up cost the Python rows pay.
FLOOR_KINDS: Final = (
    ("futex", 10000, "shared memory, FUTEX_WAIT / FUTEX_WAKE"),
    ("eventfd", 10000, "shared memory woken through eventfds (ipcwire shm 'park' until 2026-11)"),
    ("unix", 10000, "Unix stream socketpair, write + read"),
    ("pipe", 10000, "two pipes, write + read"),
    ("spin", 20000, "shared memory, both sides busy-poll"),
)
# The futex ping-pong again, each round trip after the idle gap the bench leaves before its
# rows' round trips "after idle" (the parent sleeps, untimed): the shm park and hybrid rows
# after idle time are compared with this, like with like. On the reference VM a futex round
# trip after 1 ms asleep read 61 µs p50 where back to back read 50 µs: a CPU that idled is
# slower to wake. As many round trips as those rows make (200 at scale 1).
IDLE_FLOOR: Final = ("futex/idle", "futex", 200)
_MEMCPY_BYTES: Final = 512 * 1024 * 1024  # per size
# From this size on, memcpy is also measured over the bench's working set (see _pool_memcpy).
POOL_MEMCPY_FROM: Final = 256 * 1024
_SOURCES: dict[int, list[bytes]] = {}


def _pool_memcpy(size: int, iterations: int) -> float:
    """Bytes per second of copying what a sender in the bench copies: the pool's distinct
    messages (``Pool.slots_for(size)`` of them, up to 16 MiB, round robin) into four
    destination slots (a ring that holds four messages). The extension's ``memcpy_bandwidth``
    copies one cache-hot buffer; at 1 MiB the pool does not fit in a core's cache, so this is
    the like-for-like copy floor of a large-message row. One ``memoryview`` slice assignment
    per message: a C memcpy, its Python call well under 1 % of a 256 KiB copy."""
    sources = _SOURCES.get(size)
    if sources is None:
        sources = _SOURCES[size] = [os.urandom(size) for _ in range(Pool.slots_for(size))]
    ring = memoryview(bytearray(4 * size))
    slots = [ring[i * size : (i + 1) * size] for i in range(4)]
    n = len(sources)
    t0 = time.perf_counter_ns()
    for i in range(iterations):
        slots[i & 3][:] = sources[i % n]
    elapsed = time.perf_counter_ns() - t0
    return size * iterations * 1e9 / max(elapsed, 1)


def _idle_what(gap_s: float) -> str:
    return f"shared memory, FUTEX_WAIT / FUTEX_WAKE, each round trip after {gap_s * 1000:g} ms idle"


def measure_floor(
    sizes: tuple[int, ...],
    *,
    scale: float = 1.0,
    cpus: tuple[int, int] | None = None,
    idle_gap: float = 0.0,
) -> dict[str, Any]:
    """The floor as plain data (the ``floor`` object of the JSON report).

    ``cpus``: the two CPUs of the ping-pong, the same pair the workers are pinned to (the same
    CPU twice under ``--pin same``), so the floor and the Python rows are measured alike; None
    lets the extension take the first two CPUs this process may use. ``idle_gap`` > 0 (the
    bench's gap before its round trips after idle, in seconds) adds ``futex/idle``."""
    try:
        from ipcwire._ext import _native
    except ImportError as exc:
        return {"available": False, "reason": f"ipcwire's C extension is not built: {exc}"}
    if not hasattr(_native, "floor_pingpong"):
        return {"available": False, "reason": "this build of the extension has no floor"}
    round_trips: list[dict[str, Any]] = []
    notes: list[str] = []
    for kind, iterations, what in FLOOR_KINDS:
        if kind == "spin" and cpus is not None and cpus[0] == cpus[1]:
            notes.append(
                "spin: not measured on one CPU (a busy-polling side gives the CPU back only "
                "when the scheduler preempts it, milliseconds per round trip)"
            )
            continue
        try:
            ns = _native.floor_pingpong(kind, max(int(iterations * scale), 100), 64, cpus)
        except (OSError, ValueError, RuntimeError) as exc:
            notes.append(f"{kind}: {exc}")
            continue
        round_trips.append(_round_trip_entry(kind, what, ns))
    if idle_gap > 0 and _accepts_gap(_native):
        label, kind, iterations = IDLE_FLOOR
        try:
            ns = _native.floor_pingpong(
                kind, max(int(iterations * scale), 100), 64, cpus, gap_ns=int(idle_gap * 1e9)
            )
        except (OSError, ValueError, RuntimeError) as exc:
            notes.append(f"{label}: {exc}")
        else:
            idle_entry = _round_trip_entry(label, _idle_what(idle_gap), ns)
            idle_entry["gap_us"] = idle_gap * 1e6
            round_trips.append(idle_entry)
    memcpy = []
    for size in sorted(set(sizes)):
        iterations = max(int(_MEMCPY_BYTES * scale) // size, 10)
        try:
            rate = float(_native.memcpy_bandwidth(size, iterations))
        except (OSError, ValueError, RuntimeError) as exc:
            notes.append(f"memcpy {size}: {exc}")
            continue
        entry: dict[str, Any] = {"size": size, "bytes_per_s": rate}
        if size >= POOL_MEMCPY_FROM:
            entry["pool_bytes_per_s"] = _pool_memcpy(size, iterations)
        memcpy.append(entry)
    return {
        "available": True,
        "round_trip": round_trips,
        "memcpy": memcpy,
        "notes": notes,
        "cpus": list(cpus) if cpus is not None else None,
    }


def _round_trip_entry(kind: str, what: str, ns: list[int]) -> dict[str, Any]:
    s = summarize_samples([float(v) for v in ns])
    return {
        "kind": kind,
        "what": what,
        "size": 64,
        "p50_us": s["p50"] / 1000,
        "p99_us": s["p99"] / 1000,
        "min_us": s["min"] / 1000,
        "round_trips": len(ns),
    }


def _accepts_gap(native: Any) -> bool:
    """Whether this build's floor_pingpong takes ``gap_ns`` (an extension built before it
    was added rejects the keyword; the idle floor is then not measured)."""
    return "gap_ns" in (getattr(native.floor_pingpong, "__doc__", "") or "")


def combine_floors(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One floor from several repetitions: per kind, the median of the p50s and p99s, and the
    spread of the p50s; memcpy, the median rate per size."""
    ok = [r for r in runs if r.get("available")]
    if not ok:
        return runs[0] if runs else {"available": False, "reason": "not measured"}
    round_trips = []
    for kind in [k for k, _, _ in FLOOR_KINDS] + [IDLE_FLOOR[0]]:
        rows = [rt for r in ok for rt in r["round_trip"] if rt["kind"] == kind]
        if not rows:
            continue
        in_order = [rt["p50_us"] for rt in rows]
        p50s = sorted(in_order)
        row: dict[str, Any] = {
            "kind": kind,
            "what": rows[0]["what"],
            "size": 64,
            "p50_us": median(p50s),
            "p50_per_rep_us": in_order,
            "p99_us": median(rt["p99_us"] for rt in rows),
            "min_us": min(rt["min_us"] for rt in rows),
            "p50_spread_us": [p50s[0], p50s[-1]],
            "round_trips": sum(rt["round_trips"] for rt in rows),
        }
        if "gap_us" in rows[0]:
            row["gap_us"] = rows[0]["gap_us"]
        round_trips.append(row)
    sizes = sorted({m["size"] for r in ok for m in r["memcpy"]})
    memcpy = []
    for size in sizes:
        entries = [m for r in ok for m in r["memcpy"] if m["size"] == size]
        entry: dict[str, Any] = {
            "size": size,
            "bytes_per_s": median(m["bytes_per_s"] for m in entries),
            "per_rep": [m["bytes_per_s"] for m in entries],
        }
        pool = [m["pool_bytes_per_s"] for m in entries if "pool_bytes_per_s" in m]
        if pool:
            entry["pool_bytes_per_s"] = median(pool)
            entry["pool_per_rep"] = pool
        memcpy.append(entry)
    notes = list(dict.fromkeys(n for r in ok for n in r.get("notes", [])))  # once each
    return {
        "available": True,
        "round_trip": round_trips,
        "memcpy": memcpy,
        "notes": notes,
        "repetitions": len(ok),
        "cpus": ok[0].get("cpus"),
    }
