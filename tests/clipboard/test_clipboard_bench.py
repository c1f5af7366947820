"""raw/clipboard runs end to end through the bench under a real X server (Xvfb + xclip), and
is a note, not a failure, where there is no display."""

from __future__ import annotations

import pytest

from ipcwire.bench import BenchConfig, build_document, run, validate

CONFIG = BenchConfig(
    round_trip_sizes=(64,),
    throughput_sizes=(64,),
    repeat=1,
    duration=0.05,
    warmup=0.01,
    only=("raw/clipboard", "ipcwire/clipboard/blocking"),
    peers=False,
    preset="test",
    budget=None,
    floor=False,
)


def test_clipboard_round_trips_are_measured_and_verified(x_display: str) -> None:
    """raw/clipboard and ipcwire's clipboard (``reply=primary``) both measure round trips,
    ipcwire's compared with the raw row."""
    doc = build_document(run(CONFIG), command_line=["pytest"])
    assert validate(doc) == []
    by_id = {r["contender"]: r for r in doc["results"]}
    assert set(by_id) == {"raw/clipboard", "ipcwire/clipboard/blocking"}
    for result in by_id.values():
        assert result["kind"] == "round_trip"
        assert result["status"] == "ok", (result["error"], result["detail"])
        assert result["repetitions"][0]["round_trips"] > 0
        assert result["summary"]["p50_us"] > 0
    ours = next(c for c in doc["contenders"] if c["id"] == "ipcwire/clipboard/blocking")
    assert ours["baseline"] == "raw/clipboard"


def test_without_a_display_raw_clipboard_is_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    doc = build_document(run(CONFIG), command_line=["pytest"])
    assert validate(doc) == []
    assert doc["results"] == []
    gone = {u["id"]: u["unavailable_reason"] for u in doc["unavailable"]}
    assert set(gone) == {"raw/clipboard", "ipcwire/clipboard/blocking"}
    assert all("DISPLAY" in reason for reason in gone.values())
