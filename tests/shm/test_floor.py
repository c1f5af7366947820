"""The C floor benchmarks run and return sane numbers (timings are not asserted)."""

from __future__ import annotations

import pytest

native = pytest.importorskip("ipcwire._ext._native")


@pytest.mark.parametrize("kind", ["spin", "futex", "eventfd", "unix", "pipe"])
def test_floor_pingpong(kind: str) -> None:
    samples = native.floor_pingpong(kind, 200, 64)
    assert len(samples) == 200
    assert all(isinstance(s, int) and s > 0 for s in samples)


def test_floor_pingpong_large_payload() -> None:
    assert len(native.floor_pingpong("unix", 20, 1 << 20)) == 20
    assert len(native.floor_pingpong("spin", 20, 1 << 20)) == 20


def test_floor_pingpong_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kind"):
        native.floor_pingpong("carrier-pigeon", 10)
    with pytest.raises(ValueError):
        native.floor_pingpong("spin", 0)


def test_floor_pingpong_after_idle_time() -> None:
    """gap_ns: the parent sleeps before each measured round trip (the bench's floor "after
    idle"); the sleep is not in the samples (a 1 ms gap would put every sample over 1 ms)."""
    samples = native.floor_pingpong("futex", 20, 64, gap_ns=1_000_000)
    assert len(samples) == 20
    assert all(isinstance(s, int) and s > 0 for s in samples)
    assert min(samples) < 1_000_000
    with pytest.raises(ValueError, match="gap_ns"):
        native.floor_pingpong("futex", 10, gap_ns=-1)


def test_the_bench_floor_measures_futex_after_the_idle_gap() -> None:
    from ipcwire.bench.floor import combine_floors, measure_floor

    floor = measure_floor((4096,), scale=0.01, idle_gap=0.001)
    [idle] = [rt for rt in floor["round_trip"] if rt["kind"] == "futex/idle"]
    assert idle["gap_us"] == 1000.0 and idle["round_trips"] == 100
    assert "after 1 ms idle" in idle["what"]
    [combined] = [rt for rt in combine_floors([floor])["round_trip"] if rt["kind"] == "futex/idle"]
    assert combined["gap_us"] == 1000.0 and combined["p50_per_rep_us"] == [idle["p50_us"]]
    without = measure_floor((4096,), scale=0.01)  # no rows after idle: not measured
    assert "futex/idle" not in {rt["kind"] for rt in without["round_trip"]}


def test_memcpy_bandwidth() -> None:
    assert native.memcpy_bandwidth(4096, 1000) > 1e8  # bytes per second
    with pytest.raises(ValueError):
        native.memcpy_bandwidth(0, 1)


def test_floor_pingpong_on_chosen_cpus() -> None:
    import os

    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs")
    before = os.sched_getaffinity(0)
    assert len(native.floor_pingpong("pipe", 50, cpus=(allowed[0], allowed[1]))) == 50
    assert os.sched_getaffinity(0) == before  # the caller's mask is given back
    with pytest.raises(ValueError, match="cpus"):
        native.floor_pingpong("pipe", 10, cpus=(0,))
