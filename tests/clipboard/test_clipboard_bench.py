"""raw/clipboard runs end to end through the bench under a real X server (Xvfb + xclip), and
is a note, not a failure, where there is no display."""

from __future__ import annotations

import pytest

from ipcwire.bench.trial import trial

ROWS = ("raw/clipboard", "ipcwire/clipboard/blocking")


def test_clipboard_round_trips_are_measured_and_verified(x_display: str) -> None:
    """raw/clipboard and ipcwire's clipboard (``reply=primary``) both measure round trips,
    ipcwire's compared with the raw row."""
    doc = trial(ROWS, apis=("blocking",))  # every measurement finished, verified
    by_id = {r["contender"]: r for r in doc["results"]}
    assert set(by_id) == set(ROWS)
    for result in by_id.values():
        assert result["kind"] == "round_trip"
        assert result["repetitions"][0]["round_trips"] > 0
        assert result["summary"]["p50_us"] > 0
    ours = next(c for c in doc["contenders"] if c["id"] == "ipcwire/clipboard/blocking")
    assert ours["baseline"] == "raw/clipboard"


def test_without_a_display_raw_clipboard_is_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    doc = trial(ROWS, apis=("blocking",))
    assert doc["results"] == []
    gone = {u["id"]: u["unavailable_reason"] for u in doc["unavailable"]}
    assert set(gone) == {"raw/clipboard", "ipcwire/clipboard/blocking"}
    assert all("DISPLAY" in reason for reason in gone.values())
