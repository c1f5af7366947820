"""A contender that drops, truncates or corrupts data cannot finish a measurement.

Real worker processes and real sockets: the cheaters are the raw baseline with one fault.
The run must report each of them as failed, name what went wrong, and still measure the
honest contender after them (the workers are restarted after a failure).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from pathlib import Path

import pytest
from tests.bench.faulty import NOISE, faulty

from ipcwire.bench import BenchConfig, build_document, run, validate
from ipcwire.bench.runner import Measurement

CHEATERS = (
    faulty("truncating", "b", ("throughput",)),
    faulty("dropping", "b", ("throughput",)),
    faulty("corrupting", "b", ("throughput",)),
    faulty("truncating", "a", ("round_trip",)),
    faulty("stale", "a", ("round_trip",)),
)

CONFIG = BenchConfig(
    round_trip_sizes=(64,),
    throughput_sizes=(64,),
    repeat=1,
    duration=0.05,
    warmup=0.01,
    only=("test/*", "raw/unix"),
    apis=("blocking",),
    peers=True,
    preset="test",
)


def test_cheaters_are_caught_and_the_honest_contender_still_measured() -> None:
    out = run(CONFIG, extra=CHEATERS)
    by_id: dict[tuple[str, str], Measurement] = {
        (m.contender.id, m.kind): m for m in out.measurements
    }

    expected = {
        ("test/truncating-b", "throughput"): "63 bytes (expected 64)",
        # Which message goes missing depends on where the WARM marker fell (one send in 100
        # is dropped, markers included), so only the kind of error is fixed.
        ("test/dropping-b", "throughput"): "a message was dropped",
        ("test/corrupting-b", "throughput"): "CRC-32 mismatch",
        ("test/truncating-a", "round_trip"): "63 bytes (expected 64)",
        ("test/stale-a", "round_trip"): "expected data message 1",
    }
    for key, words in expected.items():
        m = by_id[key]
        assert m.error is not None, f"{key} was not caught"
        assert "VerificationError" in m.error, m.error
        assert words in m.error, m.error
        assert not m.reps

    for kind in ("round_trip", "throughput"):
        honest = by_id[("raw/unix", kind)]
        assert honest.error is None, honest.detail
        assert len(honest.reps) == 1

    doc = build_document(out, command_line=["pytest"])
    assert validate(doc) == []
    failed = {(r["contender"], r["kind"]) for r in doc["results"] if r["status"] == "failed"}
    assert failed == set(expected)
    assert all(r["summary"] is None for r in doc["results"] if r["status"] == "failed")
    assert sum("FAILED" in note for note in doc["notes"]) == len(expected)


def test_workers_stderr_is_kept_out_of_the_display_and_shown_with_a_failure(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Library chatter on a worker's stderr does not reach the terminal; a failure's detail
    carries what the workers wrote during that measurement."""
    config = dataclasses.replace(CONFIG, only=("test/noisy-b",))
    out = run(config, extra=[faulty("noisy", "b", ("throughput",))])
    [m] = out.measurements
    assert m.error is not None and "63 bytes (expected 64)" in m.error
    assert "worker B stderr:" in m.detail
    assert NOISE in m.detail
    assert NOISE not in capfd.readouterr().err


def test_a_trial_of_a_cheater_fails_with_the_reason() -> None:
    """ipcwire.bench.trial, the check row authors use in their tests, refuses a contender
    whose measurement failed (and says why), so such a test cannot pass by accident."""
    from ipcwire.bench.trial import TrialFailed, trial

    cheater = faulty("truncating", "b", ("throughput",))
    with pytest.raises(TrialFailed, match="63 bytes"):
        trial([cheater.id], apis=("blocking",), extra=[cheater])
    doc = trial([cheater.id], apis=("blocking",), extra=[cheater], check=False)
    assert [r["status"] for r in doc["results"]] == ["failed"]


def test_a_worker_that_dies_is_reported_with_how_it_ended() -> None:
    """A contender whose process dies mid-run fails that measurement, saying how the worker
    ended, and the run goes on with fresh workers."""
    dying = [faulty("crashing", "b", ("throughput",)), faulty("segfaulting", "b", ("throughput",))]
    config = dataclasses.replace(CONFIG, only=("test/crashing-b", "test/segfaulting-b", "raw/unix"))
    out = run(config, extra=dying)
    by_id = {(m.contender.id, m.kind): m for m in out.measurements}
    crashed = by_id[("test/crashing-b", "throughput")].error
    killed = by_id[("test/segfaulting-b", "throughput")].error
    assert crashed is not None and "worker B died during the measurement (exit status 3)" in crashed
    assert killed is not None and "(killed by SIGKILL)" in killed
    assert by_id[("raw/unix", "throughput")].error is None


def test_a_worker_that_dies_leaving_a_child_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child the worker forked keeps its pipe open, so no end of file says it died; it
    was a 20 s timeout blamed on a lost message."""
    pid_file = tmp_path / "forked.pid"
    monkeypatch.setenv("FORKED_PID_FILE", str(pid_file))  # the workers inherit it
    config = dataclasses.replace(CONFIG, only=("test/forking-b",))
    try:
        out = run(config, extra=[faulty("forking", "b", ("throughput",))])
        [m] = out.measurements
        assert m.error is not None
        assert "worker B died during the measurement (exit status 3)" in m.error
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
