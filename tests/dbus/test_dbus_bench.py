"""The D-Bus raw baselines run end to end through the bench, beside ipcwire's rows, on the
private session bus of these tests (the workers inherit DBUS_SESSION_BUS_ADDRESS)."""

from __future__ import annotations

from ipcwire.bench import BenchConfig, build_document, run, validate

ROWS = ("raw/dbus", "raw/dbus/asyncio", "ipcwire/dbus/blocking", "ipcwire/dbus/asyncio")


def test_raw_dbus_rows_are_measured_verified_and_compared(dbus_session: str) -> None:
    config = BenchConfig(
        round_trip_sizes=(64,),
        throughput_sizes=(4096,),
        repeat=1,
        duration=0.05,
        warmup=0.01,
        only=ROWS,
        peers=False,
        preset="test",
        budget=None,
        floor=False,
    )
    doc = build_document(run(config), command_line=["pytest"])
    assert validate(doc) == []
    results = {(r["contender"], r["kind"]): r for r in doc["results"]}
    assert set(results) == {(row, kind) for row in ROWS for kind in ("round_trip", "throughput")}
    for key, r in results.items():
        assert r["status"] == "ok", (key, r["error"], r["detail"])
        rep = r["repetitions"][0]
        assert rep["round_trips" if key[1] == "round_trip" else "messages"] > 0
    for api, base in (("blocking", "raw/dbus"), ("asyncio", "raw/dbus/asyncio")):
        for kind in ("round_trip", "throughput"):
            assert results[(f"ipcwire/dbus/{api}", kind)]["vs_baseline"] is not None
            assert results[(base, kind)]["vs_baseline"] is None
