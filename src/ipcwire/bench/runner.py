"""Plan and run a benchmark: which measurements, in which order, on which CPUs.

The plan is every (contender, kind, size) the configuration selects. Repetitions are
interleaved: repetition 1 of every measurement, then repetition 2 of every measurement (in a
different, seeded order), and so on, so a slow minute on a shared machine spreads over all
contenders instead of sinking one. Within a repetition, the measurements that are compared
with each other (a contender and its baseline, same kind and size) run back to back. A
measurement that fails once (verification, timeout, crash) is reported as failed and not
repeated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ipcwire.bench.builtin import all_contenders
from ipcwire.bench.buses import session_bus_for_run
from ipcwire.bench.contender import Contender, Kind, Task
from ipcwire.bench.floor import combine_floors, measure_floor
from ipcwire.bench.payload import MIN_SIZE, Pool
from ipcwire.bench.worker import MeasurementFailed, WorkerPair

__all__ = [
    "FULL",
    "QUICK",
    "BenchConfig",
    "Measurement",
    "Progress",
    "RunOutput",
    "batch_for",
    "choose_cpus",
    "plan",
    "run",
]

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to measure and how long.

    ``mechanisms``: keep contenders whose mechanism is listed (None: all).
    ``only``: keep contenders whose id matches one of these glob patterns (None: all).
    ``apis``: "blocking" and/or "asyncio".
    """

    round_trip_sizes: tuple[int, ...] = (64,)
    throughput_sizes: tuple[int, ...] = (64, 65536)
    # sizes at which the batched variants (send_many / recv_many) are measured (None: every
    # throughput size); --quick batches at 64 B only, where batching is what matters
    batched_sizes: tuple[int, ...] | None = (64,)
    repeat: int = 3
    duration: float = 0.2
    warmup: float = 0.05
    mechanisms: tuple[str, ...] | None = None
    only: tuple[str, ...] | None = None
    apis: tuple[str, ...] = ("blocking", "asyncio")
    peers: bool = True
    pin: str = "separate"  # "separate", "same" or "none"
    seed: int = 0x1BC
    preset: str = "quick"
    budget: float | None = 50.0  # seconds: shorten durations to fit (None: never)
    floor: bool = True  # measure the machine's floor in C (ipcwire's extension)
    # round trips after idle time, per repetition, for rows whose wait policy is a choice
    # (Contender.measures_idle), at the first round-trip size; 0: none
    idle_round_trips: int = 40
    idle_gap: float = 0.001  # seconds of idle time before each of them (a sleep, untimed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "round_trip_sizes": list(self.round_trip_sizes),
            "throughput_sizes": list(self.throughput_sizes),
            "batched_sizes": (list(self.batched_sizes) if self.batched_sizes is not None else None),
            "repeat": self.repeat,
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "mechanisms": list(self.mechanisms) if self.mechanisms is not None else None,
            "only": list(self.only) if self.only is not None else None,
            "apis": list(self.apis),
            "peers": self.peers,
            "pin": self.pin,
            "seed": self.seed,
            "budget_s": self.budget,
            "floor": self.floor,
            "idle_round_trips": self.idle_round_trips,
            "idle_gap_s": self.idle_gap,
        }


QUICK = BenchConfig()
FULL = BenchConfig(
    round_trip_sizes=(64, 4096, 65536),
    throughput_sizes=(64, 4096, 65536, 1048576),
    repeat=5,
    duration=0.5,
    warmup=0.1,
    preset="full",
    budget=None,
    batched_sizes=None,
    idle_round_trips=200,
)

# Seconds each measurement costs beyond its warm-up and measured phase (pool, connect, close,
# control messages), measured on a 2-core VM; used only to fit --quick into its budget.
OVERHEAD_S: Final = 0.06
MIN_DURATION_S: Final = 0.04
SLOW_SETUP_S: Final = 0.3
MIN_WARMUP_S: Final = 0.008


def _fit(warmup: float, duration: float, per_run: float) -> tuple[float, float]:
    """Scale warm-up and duration down so that together they take ``per_run`` seconds, never
    below the minimums."""
    wanted = warmup + duration
    if per_run >= wanted:
        return warmup, duration
    scale = max(per_run, MIN_DURATION_S + MIN_WARMUP_S) / wanted
    return max(warmup * scale, MIN_WARMUP_S), max(duration * scale, MIN_DURATION_S)


def fit_budget(
    config: BenchConfig, tasks: int, idle_seconds: float = 0.0
) -> tuple[BenchConfig, str | None]:
    """Shorten warm-up and duration (never below 8 ms and 40 ms) so that ``tasks``
    measurements times ``repeat`` fit the budget, assuming :data:`OVERHEAD_S` per
    measurement and ``idle_seconds`` in all for the round trips after idle time (which are
    never shortened); a note says so when it had to. The run refits after each repetition with
    the overhead it actually saw."""
    if config.budget is None or tasks == 0:
        return config, None
    runs = tasks * config.repeat
    budget = config.budget - idle_seconds
    warmup, duration = _fit(config.warmup, config.duration, budget / runs - OVERHEAD_S)
    if (warmup, duration) == (config.warmup, config.duration):
        return config, None
    note = (
        f"{runs} measurements: warm-up and duration shortened from {config.warmup:g} s + "
        f"{config.duration:g} s to {warmup:.3f} s + {duration:.3f} s to fit the "
        f"{config.budget:g} s budget of --{config.preset} (expect wider spreads; the full "
        f"run has no budget)"
    )
    return dataclasses.replace(config, duration=duration, warmup=warmup), note


@dataclass(slots=True)
class Measurement:
    """One (contender, kind, size) and what its repetitions gave."""

    contender: Contender
    kind: Kind
    size: int
    batch: int
    idle: int = 0  # round trips after idle time per repetition (see BenchConfig)
    reps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    detail: str = ""
    capped: bool = False  # no more repetitions: its set-up is too slow for the budget
    unavailable: str | None = None  # the mechanism said it cannot run here (not a failure)

    @property
    def label(self) -> str:
        what = "round trip" if self.kind == "round_trip" else "throughput"
        return f"{self.contender.title} · {what} {format_size(self.size)}"


@dataclass(slots=True)
class RunOutput:
    """Everything a run produced, before analysis."""

    config: BenchConfig
    contenders: list[Contender]
    unavailable: dict[str, str]
    measurements: list[Measurement]
    notes: list[str]
    pinning: dict[str, Any]
    started: float
    finished: float
    floor: dict[str, Any] | None = None
    load_before: list[float] | None = None  # load average when the run started


def format_size(size: int) -> str:
    """64 -> "64 B", 65536 -> "64 KiB", 1048576 -> "1 MiB"."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def batch_for(size: int) -> int:
    """Messages per ``send_many`` call: 64, fewer for big messages (about 4 MiB at most),
    always dividing the pool size."""
    pool = Pool.slots_for(size)
    batch = 64
    while batch > 1 and (batch * size > 4 * 1024 * 1024 or pool % batch):
        batch //= 2
    return batch


def choose_cpus(mode: str) -> tuple[tuple[int | None, int | None], dict[str, Any]]:
    """The CPUs for workers A and B, and how to label that in the report."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if mode == "separate" and len(allowed) >= 2:
        a, b = allowed[0], allowed[1]
        return (a, b), {"mode": "separate", "cpus": [a, b]}
    if mode == "same" and allowed:
        return (allowed[0], allowed[0]), {"mode": "same", "cpus": [allowed[0]]}
    reason = "asked for" if mode == "none" else "fewer than two usable CPUs"
    return (None, None), {"mode": "none", "cpus": None, "reason": reason}


def _selected(c: Contender, config: BenchConfig) -> bool:
    if c.api not in config.apis:
        return False
    if config.only is not None and not any(fnmatch.fnmatch(c.id, p) for p in config.only):
        return False
    if c.group == "peer" and not config.peers:
        return False
    return config.mechanisms is None or c.mechanism in config.mechanisms


def _note_selected(note: str, config: BenchConfig) -> bool:
    """Whether a contender module's note ("scheme: why") is about a mechanism this run
    could measure (notes without a scheme always are)."""
    scheme, sep, _ = note.partition(": ")
    if not sep or " " in scheme:
        return True
    if config.mechanisms is not None and scheme not in config.mechanisms:
        return False
    if config.only is not None:
        ids = [f"ipcwire/{scheme}/{api}" for api in config.apis] + [f"raw/{scheme}"]
        return any(fnmatch.fnmatch(i, p) for i in ids for p in config.only)
    return True


def check_names(config: BenchConfig) -> None:
    """For the command line: a mechanism or contender glob asked for that names no contender
    is a typo, not a request to measure nothing.

    Raises:
        ValueError: naming what matched nothing and what there is.
    """
    known = all_contenders([])
    mechanisms = sorted({c.mechanism for c in known})
    unknown = [m for m in config.mechanisms or () if m not in mechanisms]
    if unknown:
        raise ValueError(
            f"--mechanisms: no contender runs on {', '.join(unknown)}; the mechanisms are "
            f"{', '.join(mechanisms)}"
        )
    missed = [g for g in config.only or () if not any(fnmatch.fnmatch(c.id, g) for c in known)]
    if missed:
        raise ValueError(
            f"--contenders: {', '.join(missed)} matches no contender; `ipcwire bench --list` "
            f"lists them"
        )


def plan(
    config: BenchConfig, notes: list[str], extra: Sequence[Contender] = ()
) -> tuple[list[Contender], dict[str, str], list[Measurement]]:
    """The contenders selected, those unavailable (id -> reason) and the measurements."""
    chosen: list[Contender] = []
    unavailable: dict[str, str] = {}
    found: list[str] = []
    known = {c.id: c for c in all_contenders(found)}
    # notes about mechanisms this run does not select ("clipboard: ...") would only confuse
    notes.extend(n for n in found if _note_selected(n, config))
    for c in extra:
        known[c.id] = c
    for c in known.values():
        if not _selected(c, config):
            continue
        reason = c.unavailable_reason()
        if reason is not None:
            unavailable[c.id] = reason
            continue
        chosen.append(c)
    measurements: list[Measurement] = []
    for c in chosen:
        for kind in c.kinds:
            sizes = config.round_trip_sizes if kind == "round_trip" else config.throughput_sizes
            for size in sizes:
                if size < MIN_SIZE:
                    raise ValueError(f"message sizes start at {MIN_SIZE} bytes, not {size}")
                if c.max_size is not None and size > c.max_size:
                    note = f"{c.title}: {format_size(size)} is over its maximum size"
                    if note not in notes:  # once, not once per kind
                        notes.append(note)
                    continue
                if c.batched and size not in (config.batched_sizes or (size,)):
                    continue
                batch = batch_for(size) if c.batched else 0
                idle = 0
                if kind == "round_trip" and c.measures_idle and size == sizes[0]:
                    idle = config.idle_round_trips
                measurements.append(Measurement(c, kind, size, batch, idle))
    return chosen, unavailable, measurements


def _timeout(config: BenchConfig, size: int) -> float:
    return 20.0 + 3 * (config.warmup + config.duration) + size / 1e6


def _setup(m: Measurement) -> float:
    """Seconds a measurement spends outside its warm-up and measured phase (median)."""
    values = sorted(rep["setup_s"] for rep in m.reps)
    return values[len(values) // 2] if values else OVERHEAD_S


def idle_cost(m: Measurement, gap: float) -> float:
    """Seconds one repetition of ``m`` spends on round trips after idle time: as measured,
    or (before it ran) the gaps plus 10 % for the sleeps' overshoot."""
    values = sorted(rep["idle_s"] for rep in m.reps if "idle_s" in rep)
    return values[len(values) // 2] if values else m.idle * gap * 1.1


def _cost(m: Measurement, gap: float) -> float:
    """What one repetition of ``m`` costs besides its warm-up and measured phase."""
    return _setup(m) + idle_cost(m, gap)


def _contender_setup(measurements: list[Measurement]) -> dict[str, float]:
    """Each contender's median set-up over its measurements (one slow hiccup does not count)."""
    per: dict[str, list[float]] = {}
    for m in measurements:
        if m.reps:
            per.setdefault(m.contender.id, []).append(_setup(m))
    return {cid: sorted(v)[len(v) // 2] for cid, v in per.items()}


def _rebudget(
    config: BenchConfig,
    measurements: list[Measurement],
    phase: tuple[float, float],
    left: int,
    done: int,
    spent: float,
    notes: list[str],
) -> tuple[float, float]:
    """After a repetition: (after the first only) stop repeating the contenders whose set-up
    alone breaks the budget (slowest first; only those whose median set-up is over
    :data:`SLOW_SETUP_S` and twice the typical one; never a baseline), then refit
    warm-up and duration of the others to what is left. Returns the new (warm-up, duration).
    """
    assert config.budget is not None
    warmup, duration = phase
    live = [m for m in measurements if m.error is None and not m.capped and not m.unavailable]
    available = config.budget - spent
    gap = config.idle_gap
    projected = sum(_cost(m, gap) + warmup + duration for m in live) * left
    if done == 1 and projected > available:
        setups = _contender_setup(live)
        typical = sorted(setups.values())[len(setups) // 2] if setups else 0.0
        slow = max(SLOW_SETUP_S, 2 * typical)
        titles = {m.contender.id: m.contender.title for m in live}
        capped: list[str] = []
        for cid, setup in sorted(setups.items(), key=lambda kv: -kv[1]):
            if projected <= available or setup < slow:
                break
            if any(m.contender.group == "baseline" for m in live if m.contender.id == cid):
                continue  # every ratio needs the baselines
            for m in live:
                if m.contender.id == cid:
                    m.capped = True
                    projected -= (_cost(m, gap) + warmup + duration) * left
            capped.append(f"{titles[cid]} ({setup:.2f} s)")
        if capped:
            notes.append(
                f"time beyond the measured phase (set-up, draining what was queued, closing) "
                f"too long for the {config.budget:g} s budget of --{config.preset}, so "
                f"measured once: {', '.join(capped)}"
            )
    live = [m for m in live if not m.capped]
    if not live:
        return warmup, duration
    per_run = (available - sum(_cost(m, gap) for m in live) * left) / (len(live) * left)
    fitted = _fit(warmup, duration, per_run)
    if fitted != (warmup, duration):
        notes.append(
            f"after repetition {done}: warm-up and duration now {fitted[0]:.3f} s + "
            f"{fitted[1]:.3f} s to stay near the {config.budget:g} s budget"
        )
    return fitted


def _root(c: Contender, by_id: dict[str, Contender]) -> str:
    """The raw baseline at the end of a contender's chain of baselines (itself if none)."""
    seen = {c.id}
    while c.baseline is not None and c.baseline in by_id and c.baseline not in seen:
        c = by_id[c.baseline]
        seen.add(c.id)
    return c.id


def interleave(measurements: list[Measurement], rng: random.Random) -> list[Measurement]:
    """One repetition's order: measurements that are compared with each other (same kind and
    size, same raw baseline at the root) run back to back, in a random order, and the blocks
    themselves in a random order. A ratio then compares numbers taken seconds apart, whatever
    the rest of the machine did in the other minutes of the run."""
    by_id = {m.contender.id: m.contender for m in measurements}
    blocks: dict[tuple[str, str, int], list[Measurement]] = {}
    for m in measurements:
        blocks.setdefault((_root(m.contender, by_id), m.kind, m.size), []).append(m)
    keys = sorted(blocks)
    rng.shuffle(keys)
    order: list[Measurement] = []
    for key in keys:
        block = list(blocks[key])
        rng.shuffle(block)
        order.extend(block)
    return order


def _floor_position(order: list[Measurement]) -> int:
    """Where in a repetition the C floor is measured: right before the shared-memory round
    trips (their park and hybrid rows are compared with the futex floor, and a VM's wake-up
    cost drifts from minute to minute, so the two are taken seconds apart), else first."""
    for i, m in enumerate(order):
        if m.contender.mechanism == "shm" and m.kind == "round_trip":
            return i
    return 0


def _unavailable_key(c: Contender) -> str:
    """ipcwire's rows of one mechanism stand or fall together (no session bus: none of the
    four D-Bus rows can run); other contenders on their own."""
    return f"mechanism:{c.mechanism}" if c.group == "ipcwire" else c.id


def _measure(
    workers: WorkerPair, m: Measurement, task: Task, timeout: float, started: bool = False
) -> None:
    """One repetition of one measurement, recorded in ``m`` (its error on failure).
    ``started``: the contender (or, for ipcwire, its mechanism) has already completed a
    measurement in this run, so a MechanismUnavailable now is a failure, not a note."""
    t0 = time.monotonic()
    try:
        a, b = workers.measure(task, timeout)
    except MeasurementFailed as exc:
        workers.restart()
        marker = "MechanismUnavailable: "
        if marker in str(exc) and not started and not m.reps:
            # missing daemon or platform, said before it ever ran: a note, like a missing peer
            m.unavailable = str(exc).split(marker, 1)[1]
            return
        m.error = str(exc)
        if marker in str(exc):
            m.error = (
                f"it became unavailable after it had run in this run (a contender that starts "
                f"and then goes away fails): {str(exc).split(marker, 1)[1]}"
            )
        m.detail = exc.detail
        return
    if a["count"] != b["count"]:
        m.error = (
            f"the receiving side counted {a['count']} messages in the measured phase, the "
            f"sending side {b['count']}: messages were lost or duplicated"
        )
        return
    elapsed = time.monotonic() - t0
    idle_s = float(b.get("idle_s", 0.0))
    setup = max(elapsed - task.warmup - task.duration - idle_s, 0.0)
    rep: dict[str, Any] = {"a": a, "b": b, "elapsed_s": elapsed, "setup_s": setup}
    if "idle_s" in b:
        rep["idle_s"] = idle_s
    m.reps.append(rep)


def run(
    config: BenchConfig,
    *,
    progress: Progress | None = None,
    extra: Sequence[Contender] = (),
) -> RunOutput:
    """Run the benchmark and return the raw results (see :mod:`ipcwire.bench.analysis`).

    Raises:
        ValueError: a size below the minimum.
        MeasurementFailed: the worker processes could not be started at all.
    """
    started = time.time()
    started_clock = time.monotonic()
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    notes: list[str] = []
    chosen, unavailable, measurements = plan(config, notes, extra)
    idle_total = sum(idle_cost(m, config.idle_gap) for m in measurements) * config.repeat
    config, note = fit_budget(config, len(measurements), idle_total)
    if note is not None:
        notes.append(note)
    cpus, pinning = choose_cpus(config.pin)
    shared = {c.id: c.make_shared for c in chosen if c.make_shared is not None}
    workdir = tempfile.mkdtemp(prefix="ipcwire-bench-")
    bus = contextlib.ExitStack()
    bus.enter_context(session_bus_for_run(any(c.mechanism == "dbus" for c in chosen), notes))
    workers = WorkerPair(cpus, shared, log_dir=workdir)
    floor_cpus = (cpus[0], cpus[1]) if cpus[0] is not None and cpus[1] is not None else None
    total = len(measurements) * config.repeat
    done = 0
    serial = 0
    floors: list[dict[str, Any]] = []
    unavailable_now: dict[str, str] = {}
    ran: set[str] = set()  # contenders (ipcwire: mechanisms) that completed a measurement
    try:
        if progress is not None:
            progress(0, total, "starting the worker processes")
        workers.start()
        pinning["workers"] = workers.hello
        warmup, duration = config.warmup, config.duration
        # the futex floor after idle time, when rows make round trips after idle (shm)
        floor_gap = config.idle_gap if any(m.idle > 0 for m in measurements) else 0.0
        for rep in range(config.repeat):
            order = interleave(measurements, random.Random(config.seed + rep))
            floor_at = _floor_position(order) if config.floor else -1
            if config.floor and not order:  # nothing to measure beside it: the floor alone
                floors.append(measure_floor(config.throughput_sizes, scale=0.5, cpus=floor_cpus))
            runs = 0
            for position, m in enumerate(order):
                if position == floor_at:
                    if progress is not None:
                        label = f"the machine's floor, in C (repetition {rep + 1}/{config.repeat})"
                        progress(done, total, label)
                    floors.append(
                        measure_floor(
                            config.throughput_sizes,
                            scale=0.5,
                            cpus=floor_cpus,
                            idle_gap=floor_gap,
                        )
                    )
                if progress is not None:
                    progress(done, total, f"{m.label} (repetition {rep + 1}/{config.repeat})")
                done += 1
                if m.unavailable is None:
                    m.unavailable = unavailable_now.get(_unavailable_key(m.contender))
                if m.error is not None or m.capped or m.unavailable is not None:
                    continue
                serial += 1
                runs += 1
                task = Task(
                    contender=m.contender,
                    kind=m.kind,
                    size=m.size,
                    batch=m.batch,
                    warmup=warmup,
                    duration=duration,
                    workdir=workdir,
                    serial=serial,
                    seed=config.seed,
                    idle=m.idle,
                    gap=config.idle_gap,
                )
                key = _unavailable_key(m.contender)
                _measure(workers, m, task, _timeout(config, m.size), key in ran)
                if m.unavailable is not None:
                    unavailable_now[key] = m.unavailable
                elif m.reps:
                    ran.add(key)
            left = config.repeat - rep - 1
            if config.budget is not None and left and runs:
                spent = time.monotonic() - started_clock
                warmup, duration = _rebudget(
                    config, measurements, (warmup, duration), left, rep + 1, spent, notes
                )
        if progress is not None:
            progress(total, total, "done")
    finally:
        workers.stop()
        bus.close()
        shutil.rmtree(workdir, ignore_errors=True)
    gone = {c.id for c in chosen if _unavailable_key(c) in unavailable_now}
    for c in chosen:
        if c.id in gone:
            unavailable[c.id] = unavailable_now[_unavailable_key(c)]
    measurements = [m for m in measurements if m.contender.id not in gone]
    chosen = [c for c in chosen if c.id not in gone]
    return RunOutput(
        config=config,
        contenders=chosen,
        unavailable=unavailable,
        measurements=measurements,
        notes=notes,
        pinning=pinning,
        started=started,
        finished=time.time(),
        floor=combine_floors(floors) if floors else None,
        load_before=load_before,
    )
