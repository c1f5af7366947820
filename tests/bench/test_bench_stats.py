"""The benchmark's statistics: percentiles, medians of medians, spreads, ratios."""

from __future__ import annotations

from typing import Any

import pytest

from ipcwire.bench.stats import (
    median,
    median_of_medians,
    percentile,
    ratio,
    spread,
    summarize_samples,
)


def test_percentile_interpolates_linearly_like_numpy() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 50) == 25.0
    # numpy.percentile([10, 20, 30, 40], 90) == 37.0
    assert percentile(values, 90) == pytest.approx(37.0)
    assert percentile(values, 99) == pytest.approx(39.7)


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.0], 99.9) == 7.0


def test_percentile_rejects_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_median_odd_and_even_and_unsorted() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_median_of_medians_takes_each_repetition_alone() -> None:
    # Repetition medians: 2, 50, 4 -> median 4. A plain median of all values would be 4 too,
    # so use repetitions of different sizes where the two disagree.
    reps = [[1.0, 2.0, 3.0], [50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0], [4.0]]
    assert median_of_medians(reps) == 4.0
    assert median([v for rep in reps for v in rep]) == 50.0


def test_median_of_medians_ignores_empty_repetitions() -> None:
    assert median_of_medians([[], [5.0], [7.0, 9.0]]) == pytest.approx(6.5)
    with pytest.raises(ValueError):
        median_of_medians([[], []])


def test_spread_is_min_max_and_median_with_relative_width() -> None:
    s = spread([12.0, 10.0, 11.0])
    assert (s.low, s.high, s.center) == (10.0, 12.0, 11.0)
    assert s.relative == pytest.approx(2.0 / 11.0)
    assert spread([0.0]).relative == 0.0
    with pytest.raises(ValueError):
        spread([])


def test_ratio_is_value_over_reference_or_none() -> None:
    assert ratio(110.0, 100.0) == pytest.approx(1.1)
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(0.0, 1.0) is None


def test_summarize_samples_reports_the_tail() -> None:
    samples = [float(v) for v in range(1, 1001)]  # 1..1000
    s = summarize_samples(samples)
    assert s["count"] == 1000
    assert s["min"] == 1.0
    assert s["max"] == 1000.0
    assert s["p50"] == pytest.approx(500.5)
    assert s["p99"] == pytest.approx(990.01)
    assert s["p99_9"] == pytest.approx(999.001)
    assert s["mean"] == pytest.approx(500.5)
    with pytest.raises(ValueError):
        summarize_samples([])


def test_floor_targets_pair_each_repetition_with_that_repetitions_floor() -> None:
    """shm park vs the C futex floor: the ratio is taken per repetition (the floor of the same
    repetition), then the median; a floor missing from the report leaves it not measured."""
    from ipcwire.bench.rules import check_targets

    def rtt(cid: str, p50s: list[float]) -> dict[str, Any]:
        reps = [{"latency_us": {"p50": v}} for v in p50s]
        return {"contender": cid, "kind": "round_trip", "size": 64, "status": "ok",
                "repetitions": reps}  # fmt: skip

    doc: dict[str, Any] = {
        "contenders": [{"id": "ipcwire/shm/blocking/spin"}, {"id": "ipcwire/shm/blocking/park"}],
        "config": {"round_trip_sizes": [64], "throughput_sizes": [65536]},
        "results": [
            rtt("ipcwire/shm/blocking/spin", [0.5, 0.5, 0.5]),
            rtt("ipcwire/shm/blocking/park", [33.0, 60.0, 36.0]),
        ],
        "floor": {
            "available": True,
            "round_trip": [{"kind": "futex", "p50_us": 30.0, "p50_per_rep_us": [30.0, 50.0, 30.0]}],
        },
    }
    [park] = [t for t in check_targets(doc) if t["target"].startswith("shm: park")]
    assert park["ratio"] == pytest.approx(1.2)  # 33/30=1.1, 60/50=1.2, 36/30=1.2
    assert park["ratio_spread"] == pytest.approx([1.1, 1.2])
    assert park["held"] is True
    del doc["floor"]
    [park] = [t for t in check_targets(doc) if t["target"].startswith("shm: park")]
    assert park["held"] is None


def test_the_verdict_reads_large_message_rates_in_plain_numbers() -> None:
    """At 8 MiB the highest throughput read "0.00 M msgs/s (4.47 GB/s)"."""
    from ipcwire.bench.rules import verdict

    contender = {"id": "ipcwire/shm", "title": "ipcwire shm", "group": "ipcwire", "batched": False}
    doc: dict[str, Any] = {
        "contenders": [contender],
        "results": [
            {
                "contender": "ipcwire/shm",
                "kind": "throughput",
                "status": "ok",
                "size": size,
                "summary": {"msgs_per_s": rate, "bytes_per_s": rate * size},
                "vs_baseline": None,
            }
            for size, rate in ((64, 1_460_000.0), (8 << 20, 533.0))
        ],
    }
    lines = verdict(doc)
    assert "Highest throughput at 64 B: ipcwire shm, 1.46 M msgs/s (93 MB/s)." in lines
    assert "Highest throughput at 8 MiB: ipcwire shm, 533 msgs/s (4.47 GB/s)." in lines
