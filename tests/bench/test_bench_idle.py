"""Round trips after idle time: back to back, a ``hybrid`` wait never leaves its spin phase
(helper-84: 0.57 µs back to back, 30 µs p50 and 249 µs p99 with 1 ms between requests), so
the bench also measures the rows whose wait policy is a choice with idle time between
requests, reports it beside the back-to-back p50, and judges park and hybrid on it.

No timed assertions: the plan, the report document and its renderings are read; the one real
run (a few milliseconds) only has to carry the numbers through.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import pytest
from rich.console import Console
from tests.bench.test_bench_fairness import _doc, _round_trip

from ipcwire.bench.analysis import refresh
from ipcwire.bench.html import render_html
from ipcwire.bench.markdown import render_markdown
from ipcwire.bench.report import fmt_us, render, table_rows
from ipcwire.bench.runner import FULL, QUICK, plan
from ipcwire.bench.schema import validate
from ipcwire.bench.trial import results_by, trial


def _idle_plan(config: Any) -> dict[tuple[str, str, int], int]:
    _, _, measurements = plan(config, [])
    return {(m.contender.id, m.kind, m.size): m.idle for m in measurements}


def test_the_plan_measures_rows_with_a_wait_policy_after_idle_time() -> None:
    planned = _idle_plan(dataclasses.replace(FULL, only=("ipcwire/shm/*", "raw/unix", "raw/shm")))
    for policy in ("spin", "park", "hybrid"):
        assert planned[(f"ipcwire/shm/blocking/{policy}", "round_trip", 64)] == 200
        assert planned[(f"ipcwire/shm/asyncio/{policy}", "round_trip", 64)] == 200
        # at the first round-trip size only: the wake-up does not depend on the size
        assert planned[(f"ipcwire/shm/blocking/{policy}", "round_trip", 4096)] == 0
        assert planned[(f"ipcwire/shm/blocking/{policy}", "throughput", 64)] == 0
    assert planned[("raw/shm", "round_trip", 64)] == 200  # it spins
    assert planned[("raw/unix", "round_trip", 64)] == 0  # it only parks: nothing to choose
    quick = _idle_plan(dataclasses.replace(QUICK, only=("ipcwire/shm/blocking/hybrid",)))
    assert quick[("ipcwire/shm/blocking/hybrid", "round_trip", 64)] == QUICK.idle_round_trips
    assert 0 < QUICK.idle_round_trips < FULL.idle_round_trips
    off = dataclasses.replace(QUICK, idle_round_trips=0, only=("ipcwire/shm/blocking/hybrid",))
    assert set(_idle_plan(off).values()) == {0}
    assert QUICK.idle_gap == 0.001  # well beyond hybrid's default spin budget


@pytest.fixture(scope="module")
def real_doc() -> dict[str, Any]:
    """A short real run: hybrid on both APIs (each after 1 ms idle 40 times) and raw/unix."""
    return trial(["ipcwire/shm/*/hybrid", "raw/unix"], throughput_sizes=(64,))


def test_a_real_run_records_round_trips_after_idle_time(real_doc: dict[str, Any]) -> None:
    assert validate(real_doc) == []
    assert real_doc["config"]["idle_round_trips"] == 40
    assert real_doc["config"]["idle_gap_s"] == 0.001
    by = results_by(real_doc, "contender", "kind")
    for cid in ("ipcwire/shm/blocking/hybrid", "ipcwire/shm/asyncio/hybrid"):
        r = by[(cid, "round_trip")]
        idle = r["summary"]["idle"]
        assert idle["gap_us"] == 1000.0
        assert idle["round_trips"] == 40 and idle["round_trips_min"] == 40
        assert idle["p99_firm"] is False  # 40 is too few for a 99th percentile
        [rep] = r["repetitions"]
        assert rep["idle"]["round_trips"] == 40
        # the idle phase is not counted as set-up
        assert rep["setup_s"] + rep["idle"]["seconds"] <= rep["elapsed_s"]
        # side A's counts cover the back-to-back phase only (they must match side B's)
        assert r["summary"]["round_trips"] == rep["round_trips"]
    assert "idle" not in by[("raw/unix", "round_trip")]["summary"]
    assert "idle" not in by[("ipcwire/shm/blocking/hybrid", "throughput")]["summary"]


def test_the_reports_show_the_idle_round_trip_beside_the_back_to_back_p50(
    real_doc: dict[str, Any],
) -> None:
    out = io.StringIO()
    render(real_doc, Console(file=out, width=400, color_system=None))
    text = out.getvalue()
    assert "after 1 ms idle: p50 · p99 µs" in text
    hybrid = next(line for line in text.splitlines() if "ipcwire shm, hybrid " in line)
    idle = results_by(real_doc, "contender", "kind")[("ipcwire/shm/blocking/hybrid", "round_trip")][
        "summary"
    ]["idle"]
    assert f"{fmt_us(idle['p50_us'])} · —" in hybrid
    md = render_markdown(real_doc)
    head = next(line for line in md.splitlines() if line.startswith("| contender"))
    cells = [c.strip() for c in head.split("|")]
    at = cells.index("RT 64 B p50 µs (min-max)")
    assert cells[at + 1] == "after 1 ms idle: p50 · p99 µs"
    assert "*after idle*" in md
    page = render_html(real_doc, png=b"")
    assert "after 1 ms idle: p50 · p99 µs" in page


def test_a_run_without_idle_round_trips_has_no_idle_column() -> None:
    doc = refresh(
        _doc(["raw/unix", "ipcwire/unix/blocking"], [_round_trip("raw/unix", [50.0, 51.0])])
    )
    from ipcwire.bench.report import idle_column

    assert idle_column(doc, 64) is None


def test_the_html_page_shows_the_implementation_line(real_doc: dict[str, Any]) -> None:
    page = render_html(real_doc, png=b"")
    assert "implementation: C extension (shm ring c, unix/tcp sender c)" in page
    noext = dict(real_doc)
    noext["implementation"] = {
        "extension": False,
        "extension_error": "No module named 'ipcwire._ext._native'",
        "shm_ring": "python",
        "stream_sender": "python",
    }
    page = render_html(noext, png=b"")
    assert "<p class=no>WARNING: ipcwire&#x27;s C extension did not load" in page


def _with_idle(r: dict[str, Any], p50s: list[float], gap_us: float = 1000.0) -> dict[str, Any]:
    for rep, v in zip(r["repetitions"], p50s, strict=True):
        latency = {"p50": v, "p99": 8 * v, "min": v / 2, "max": 9 * v}
        rep["idle"] = {"gap_us": gap_us, "round_trips": 200, "latency_us": latency}
    r["summary"]["idle"] = {
        "gap_us": gap_us, "p50_us": sorted(p50s)[len(p50s) // 2],
        "p50_spread_us": [min(p50s), max(p50s)], "p99_us": 249.0, "round_trips": 600,
        "round_trips_min": 200, "p99_firm": True,
    }  # fmt: skip
    return r


_FLOOR = {
    "available": True,
    "round_trip": [{"kind": "futex", "p50_us": 25.0, "p50_per_rep_us": [25.0, 26.0, 24.0]}],
}


def test_park_and_hybrid_are_judged_against_the_futex_floor_after_idle_time() -> None:
    """Back to back hybrid read 0.7 µs against the sleeping floor (not comparable); after
    1 ms idle it parks like the floor, so the target compares again, on those numbers."""
    ids = ["ipcwire/shm/blocking/spin", "ipcwire/shm/blocking/park", "ipcwire/shm/blocking/hybrid"]
    doc = refresh(
        _doc(
            ids,
            [
                _with_idle(_round_trip(ids[0], [0.7, 0.7, 0.7]), [0.9, 0.8, 0.9]),
                _with_idle(_round_trip(ids[1], [40.0, 39.0, 41.0]), [45.0, 44.0, 46.0]),
                _with_idle(_round_trip(ids[2], [0.7, 0.7, 0.7]), [30.0, 28.0, 29.0]),
            ],
            floor=_FLOOR,
        )
    )
    targets = {t["target"]: t for t in doc["targets"]}
    hybrid = targets["shm: hybrid round trip after 1 ms idle, p50 within 1.2x of the C futex "
                     "ping-pong"]  # fmt: skip
    assert hybrid.get("comparable") is not False
    assert hybrid["basis"] == "after idle"
    assert hybrid["ratio"] == pytest.approx(29.0 / 25.0, rel=0.05)  # paired per repetition
    assert hybrid["held"] is True
    park = targets["shm: park round trip after 1 ms idle, p50 within 1.2x of the C futex "
                   "ping-pong"]  # fmt: skip
    assert park["held"] is False and park["ratio"] == pytest.approx(45.0 / 25.0, rel=0.05)
    assert not any("hybrid" in name and "after" not in name for name in targets)
    line = next(v for v in doc["verdict"] if v.startswith("Round trip p50 after 1 ms idle"))
    assert "ipcwire shm, hybrid 29.0 µs (back to back 0.70 µs)" in line


def test_after_idle_the_floor_is_the_futex_ping_pong_after_the_same_idle_time() -> None:
    """Like with like: a futex round trip after 1 ms asleep read 61 µs where back to back
    read 50 µs (a CPU that idled wakes slower), so park after idle is compared with the floor
    measured after the same gap when the report has it."""
    ids = ["ipcwire/shm/blocking/spin", "ipcwire/shm/blocking/park"]
    idle_floor = {"kind": "futex/idle", "p50_us": 40.0, "p50_per_rep_us": [40.0, 41.0, 39.0],
                  "gap_us": 1000.0}  # fmt: skip
    floor = {"available": True, "round_trip": [{"kind": "futex", "p50_us": 25.0}, idle_floor]}
    doc = refresh(
        _doc(
            ids,
            [
                _with_idle(_round_trip(ids[0], [0.7, 0.7, 0.7]), [0.9, 0.8, 0.9]),
                _with_idle(_round_trip(ids[1], [40.0, 39.0, 41.0]), [45.0, 44.0, 46.0]),
            ],
            floor=floor,
        )
    )
    targets = {t["target"]: t for t in doc["targets"]}
    park = targets["shm: park round trip after 1 ms idle, p50 within 1.2x of the C futex "
                   "ping-pong after 1 ms idle"]  # fmt: skip
    # 1.8x the back-to-back floor (not held); 1.13x the floor after the same idle time
    assert park["ratio"] == pytest.approx(45.0 / 40.0, rel=0.05) and park["held"] is True


def test_without_idle_round_trips_hybrid_stays_not_comparable_back_to_back() -> None:
    doc = refresh(
        _doc(
            ["ipcwire/shm/blocking/spin", "ipcwire/shm/blocking/hybrid"],
            [_round_trip("ipcwire/shm/blocking/hybrid", [0.7, 0.7, 0.7])],
            floor=_FLOOR,
        )
    )
    [t] = [t for t in doc["targets"] if t["target"].startswith("shm: hybrid")]
    assert t["comparable"] is False and t["basis"] == "back to back"


def test_the_schema_accepts_the_idle_fields_and_checks_them() -> None:
    from tests.advisor._bench_doc import bench_doc

    doc = bench_doc([("shm", "hybrid", "round_trip", 0.7)], idle={("shm", "hybrid"): 30.0})
    assert validate(doc) == []
    doc["results"][0]["summary"]["idle"]["p99_firm"] = "yes"
    assert any("idle.p99_firm" in e for e in validate(doc))


def test_the_plot_marks_p99_only_where_it_rests_on_enough_samples() -> None:
    """plot.py drew every p99 as a diamond, even of 12 samples (the slowest but one)."""
    firm = _with_idle(_round_trip("ipcwire/shm/blocking/hybrid", [0.7, 0.7, 0.7]), [30.0] * 3)
    thin = _round_trip("raw/unix", [50.0, 51.0, 52.0])
    for rep in thin["repetitions"]:
        rep["round_trips"] = 12
    for r in (firm, thin):
        r["summary"]["p50_spread_us"] = [r["summary"]["p50_us"]] * 2
    doc = refresh(_doc(["ipcwire/shm/blocking/hybrid", "raw/unix"], [firm, thin], floor=_FLOOR))
    from ipcwire.bench.plot import round_trip_points

    rows, p99, idle = round_trip_points(doc, table_rows(doc), 64)
    titles = [r[0] for r in rows]
    assert [titles[y] for y, _ in p99] == ["ipcwire shm, hybrid"]  # raw/unix: 12 samples
    assert [(titles[y], v) for y, v in idle] == [("ipcwire shm, hybrid", 30.0)]
