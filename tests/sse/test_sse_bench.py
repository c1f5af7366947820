"""The SSE raw baselines (aiohttp streaming events directly) run end to end through the
bench beside ipcwire's sse+http rows: throughput only, the listening side sends."""

from __future__ import annotations

import pytest

from ipcwire.bench import BenchConfig, build_document, run, validate
from ipcwire.sse._bench import EventSplitter, _event

ROWS = (
    "raw/sse+http",
    "raw/sse+http/asyncio",
    "ipcwire/sse+http/blocking",
    "ipcwire/sse+http/asyncio",
)


def test_raw_sse_rows_are_measured_verified_and_compared() -> None:
    config = BenchConfig(
        round_trip_sizes=(64,),
        throughput_sizes=(64, 65536),
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
    results = {(r["contender"], r["size"]): r for r in doc["results"]}
    assert {r["kind"] for r in doc["results"]} == {"throughput"}  # one-way: no round trips
    assert set(results) == {(row, size) for row in ROWS for size in (64, 65536)}
    for key, r in results.items():
        assert r["status"] == "ok", (key, r["error"], r["detail"])
        assert r["repetitions"][0]["messages"] > 0
    listener_sends = {c["id"]: c["listener_sends"] for c in doc["contenders"] if "id" in c}
    assert all(listener_sends[row] for row in ROWS)
    for api, base in (("blocking", "raw/sse+http"), ("asyncio", "raw/sse+http/asyncio")):
        for size in (64, 65536):
            assert results[(f"ipcwire/sse+http/{api}", size)]["vs_baseline"] is not None
            assert results[(base, size)]["vs_baseline"] is None


@pytest.mark.parametrize("cut", [1, 5, 7, 50])
def test_event_splitter_finds_events_split_anywhere(cut: int) -> None:
    payloads = [bytes([i]) * (i * 13) for i in range(1, 9)]
    wire = b": comment\n\n" + b"".join(_event(p) for p in payloads)
    wire += b"id: 7\ndata: " + _event(b"two lines")[6:-2].replace(b"=", b"=\ndata: ", 1) + b"\n\n"
    split = EventSplitter()
    got = []
    for i in range(0, len(wire), cut):
        got.extend(split.feed(wire[i : i + cut]))
    assert got[: len(payloads)] == payloads
    assert len(got) == len(payloads) + 1
