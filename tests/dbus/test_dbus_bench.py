"""The D-Bus raw baselines run end to end through the bench, beside ipcwire's rows, on the
private session bus of these tests (the workers inherit DBUS_SESSION_BUS_ADDRESS)."""

from __future__ import annotations

from ipcwire.bench.trial import results_by, trial

ROWS = ("raw/dbus", "raw/dbus/asyncio", "ipcwire/dbus/blocking", "ipcwire/dbus/asyncio")


def test_raw_dbus_rows_are_measured_verified_and_compared(dbus_session: str) -> None:
    doc = trial(ROWS, throughput_sizes=(4096,))  # every measurement finished, verified
    results = results_by(doc, "contender", "kind")
    assert set(results) == {(row, kind) for row in ROWS for kind in ("round_trip", "throughput")}
    for key, r in results.items():
        rep = r["repetitions"][0]
        assert rep["round_trips" if key[1] == "round_trip" else "messages"] > 0
    for api, base in (("blocking", "raw/dbus"), ("asyncio", "raw/dbus/asyncio")):
        for kind in ("round_trip", "throughput"):
            assert results[(f"ipcwire/dbus/{api}", kind)]["vs_baseline"] is not None
            assert results[(base, kind)]["vs_baseline"] is None
