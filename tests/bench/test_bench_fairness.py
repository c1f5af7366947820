"""The ratios the report prints compare equal work, or say that they do not.

No timing here: documents built by hand (or the real contenders' configuration) go through
the same analysis as a run's, and the test reads what the report would say.
"""

from __future__ import annotations

from typing import Any

from ipcwire.bench.analysis import refresh
from ipcwire.bench.builtin import all_contenders
from ipcwire.bench.report import held_label, vs_raw_label
from ipcwire.bench.schema import validate


def _contenders() -> dict[str, dict[str, Any]]:
    return {c.id: {**c.describe(), "available": True} for c in all_contenders([])}


def _throughput(cid: str, rates: list[float], size: int = 64) -> dict[str, Any]:
    return {
        "contender": cid,
        "kind": "throughput",
        "size": size,
        "batch": 0,
        "status": "ok",
        "error": None,
        "repetitions": [{"msgs_per_s": v} for v in rates],
        "summary": {"msgs_per_s": sorted(rates)[len(rates) // 2],
                    "bytes_per_s": sorted(rates)[len(rates) // 2] * size},
        "vs_baseline": None,
        "vs_fastest": None,
    }  # fmt: skip


def _round_trip(cid: str, p50s: list[float], size: int = 64) -> dict[str, Any]:
    return {
        "contender": cid,
        "kind": "round_trip",
        "size": size,
        "batch": 0,
        "status": "ok",
        "error": None,
        "repetitions": [{"latency_us": {"p50": v}, "round_trips": 5000} for v in p50s],
        "summary": {"p50_us": sorted(p50s)[len(p50s) // 2], "p99_us": 1.0, "p99_9_us": 1.0},
        "vs_baseline": None,
        "vs_fastest": None,
    }


def _doc(ids: list[str], results: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    known = _contenders()
    return {
        "contenders": [known[i] for i in ids],
        "config": {"round_trip_sizes": [64], "throughput_sizes": [64], "repeat": 3},
        "results": results,
        **extra,
    }


def test_http_and_grpc_throughput_against_their_raw_baselines_is_not_comparable() -> None:
    """ipcwire packs what is queued into one POST / one gRPC message; the raw baselines send
    one per message. The report showed 665x and 31.9x as held targets; now the ratio is in
    brackets, the target is neither held nor missed, and the verdict says why."""
    known = _contenders()
    for raw in ("raw/http", "raw/http/asyncio", "raw/grpc", "raw/grpc/asyncio"):
        assert "packs" in known[raw]["unequal"]["throughput"], raw
        assert "round_trip" not in known[raw]["unequal"]  # one message at a time: equal
    doc = refresh(
        _doc(
            ["raw/http", "ipcwire/http/blocking"],
            [
                _throughput("raw/http", [1500.0, 1400.0, 1600.0]),
                _throughput("ipcwire/http/blocking", [1e6, 9e5, 1.1e6]),
                _round_trip("raw/http", [600.0, 610.0, 590.0]),
                _round_trip("ipcwire/http/blocking", [650.0, 660.0, 640.0]),
            ],
        )
    )
    by = {(r["contender"], r["kind"]): r for r in doc["results"]}
    tp = by[("ipcwire/http/blocking", "throughput")]
    assert tp["vs_baseline"] is None
    assert round(tp["vs_baseline_unequal"]["ratio"]) == 667
    assert vs_raw_label(tp) == "(666.67x)"
    rt = by[("ipcwire/http/blocking", "round_trip")]
    assert rt["vs_baseline"] is not None and "vs_baseline_unequal" not in rt
    [target] = [t for t in doc["targets"] if t["target"].startswith("http: blocking throughput")]
    assert target["held"] is None and target["comparable"] is False
    assert target["ratio"] is not None and "packs" in target["why"]
    assert held_label(target) == "not comparable"
    [rt_target] = [t for t in doc["targets"] if t["target"].startswith("http: blocking round")]
    assert rt_target["held"] is True
    line = next(v for v in doc["verdict"] if v.startswith("ipcwire http vs raw"))
    assert "throughput 64 B not comparable" in line and "666" not in line
    assert any(v.startswith("Not comparable") and "one POST" in v for v in doc["verdict"])


def test_the_schema_accepts_what_marks_a_ratio_not_comparable() -> None:
    from tests.bench.test_bench_plan import _minimal_document

    doc = _minimal_document()
    doc["contenders"][0]["unequal"] = {"throughput": "why"}
    doc["results"][0]["vs_baseline_unequal"] = {"ratio": 2.0, "spread": [1.0, 3.0], "why": "w"}
    doc["targets"] = [{"target": "t", "ratio": 2.0, "limit": 1.0, "comparison": "at least",
                       "held": None, "comparable": False, "why": "w"}]  # fmt: skip
    assert validate(doc) == []
    doc["results"][0]["vs_baseline_unequal"] = {"ratio": 2.0}
    assert any("vs_baseline_unequal" in e for e in validate(doc))


def _pipe_size(fd: int) -> int:
    import fcntl

    return int(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))


def test_raw_pipe_fifo_and_spawn_baselines_get_pipes_as_big_as_ipcwires(tmp_path: Any) -> None:
    """raw/pipe, raw/fifo and raw/spawn used default 64 KiB pipes, ipcwire grows its pipes to
    1 MiB: the whole "2.9x" at 64 KiB was the buffer size. Each raw side B's two fds are now
    pipes of the size ipcwire's own make_pipe() gets here."""
    import os
    import threading

    from ipcwire.bench.contender import Task
    from ipcwire.pipe._fdutil import make_pipe

    r, w = make_pipe()
    ipcwire_size = _pipe_size(w)
    os.close(r)
    os.close(w)
    known = {c.id: c for c in all_contenders([])}
    assert ipcwire_size > 65536  # else this machine cannot tell the two apart
    for serial, cid in enumerate(("raw/pipe", "raw/fifo", "raw/spawn"), 1):
        c = known[cid]
        task = Task(c, "round_trip", 64, 0, 0.0, 0.0, str(tmp_path), serial, 0)
        acceptor = c.side_a(task, None)
        accepted: list[Any] = []
        thread = threading.Thread(target=lambda a=acceptor, out=accepted: out.append(a.accept()))
        thread.start()
        link = c.side_b(task, acceptor.address, None)
        thread.join(30)
        assert accepted, cid
        try:
            assert _pipe_size(link._rfd) == ipcwire_size, cid
            assert _pipe_size(link._wfd) == ipcwire_size, cid
        finally:
            accepted[0].close()
            link.close()
            acceptor.close()


def test_shm_park_and_hybrid_are_not_divided_by_the_spinning_python_ring() -> None:
    """'ipcwire shm, park vs raw Python: round trip 64 B 18.53x' compared a futex wake-up with
    a busy-polling ring. A row whose wait policy differs from its baseline's is now not
    comparable; spin against the spinning ring still is."""
    ids = ["raw/shm", "ipcwire/shm/blocking/spin", "ipcwire/shm/blocking/park",
           "ipcwire/shm/blocking/hybrid"]  # fmt: skip
    doc = refresh(
        _doc(
            ids,
            [
                _round_trip("raw/shm", [2.1, 2.2, 2.1]),
                _round_trip("ipcwire/shm/blocking/spin", [0.7, 0.7, 0.7]),
                _round_trip("ipcwire/shm/blocking/park", [40.0, 39.0, 41.0]),
                _round_trip("ipcwire/shm/blocking/hybrid", [0.7, 0.7, 0.7]),
            ],
        )
    )
    by = {r["contender"]: r for r in doc["results"]}
    assert by["ipcwire/shm/blocking/spin"]["vs_baseline"] is not None
    for cid in ("ipcwire/shm/blocking/park", "ipcwire/shm/blocking/hybrid"):
        assert by[cid]["vs_baseline"] is None, cid
        assert "futex floor" in by[cid]["vs_baseline_unequal"]["why"]
    line = next(v for v in doc["verdict"] if v.startswith("ipcwire shm, park vs raw"))
    assert line == "ipcwire shm, park vs raw Python: round trip 64 B not comparable."


def test_a_floor_above_the_measured_value_is_called_noisy_not_a_pass() -> None:
    """helper-84's run: futex floor per repetition [58.5, 37.0, 66.5] µs, Python's park 40 µs:
    the target read '0.66x yes' and the verdict 'the machine takes 117% of ipcwire's time'."""
    ids = ["raw/unix", "ipcwire/unix/blocking", "ipcwire/shm/blocking/spin",
           "ipcwire/shm/blocking/park"]  # fmt: skip
    floor = {
        "available": True,
        "round_trip": [
            {"kind": "futex", "p50_us": 58.5, "p50_per_rep_us": [58.5, 37.0, 66.5]},
            {"kind": "unix", "p50_us": 45.0, "p50_per_rep_us": [45.0, 45.0, 45.0]},
        ],
    }
    doc = refresh(
        _doc(
            ids,
            [
                _round_trip("raw/unix", [53.3, 50.0, 55.0]),
                _round_trip("ipcwire/unix/blocking", [38.5, 38.0, 39.0]),
                _round_trip("ipcwire/shm/blocking/spin", [0.7, 0.7, 0.7]),
                _round_trip("ipcwire/shm/blocking/park", [40.1, 35.0, 44.2]),
            ],
            floor=floor,
        )
    )
    [park] = [t for t in doc["targets"] if t["target"].startswith("shm: park")]
    assert park["ratio"] < 1.0
    assert "C floor was not below the measured value in 3 of 3" in park["note"]
    assert "noisy" in park["note"]
    line = next(v for v in doc["verdict"] if v.startswith("unix round trip"))
    assert "%" not in line
    assert "the C floor was not below ipcwire's time" in line


def test_the_asyncio_versus_blocking_target_says_what_the_event_loop_costs_here() -> None:
    """'unix: asyncio round trip p50 within 1.5x of blocking | 2.46x | NO' said nothing of
    why; the same run's raw Python asyncio and blocking round trips say how much of it is the
    event loop's own, and how much ipcwire adds on either side."""
    ids = ["raw/unix", "raw/unix/asyncio", "ipcwire/unix/blocking", "ipcwire/unix/asyncio"]
    doc = refresh(
        _doc(
            ids,
            [
                _round_trip("raw/unix", [30.0, 30.0, 30.0]),
                _round_trip("raw/unix/asyncio", [60.0, 60.0, 60.0]),
                _round_trip("ipcwire/unix/blocking", [27.0, 27.0, 27.0]),
                _round_trip("ipcwire/unix/asyncio", [63.0, 63.0, 63.0]),
            ],
        )
    )
    [t] = [t for t in doc["targets"] if t["target"] == "unix: asyncio round trip p50 within 1.5x "
           "of blocking"]  # fmt: skip
    assert t["held"] is False
    assert t["note"] == (
        "in this run raw Python's asyncio round trip is 2.00x its blocking one (the event "
        "loop's own cost here); ipcwire asyncio is 1.05x raw asyncio, ipcwire blocking 0.90x "
        "raw blocking"
    )


def _implementation_in_child(env: dict[str, str], block_extension: bool) -> dict[str, Any]:
    import json
    import os
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        + ("sys.modules['ipcwire._ext._native'] = None\n" if block_extension else "")
        + "from ipcwire.bench.machine import implementation\n"
        "print(json.dumps(implementation()))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IPCWIRE_")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return dict(json.loads(out.stdout))


def test_the_report_says_which_implementation_ran_and_warns_without_the_extension() -> None:
    """helper-84 removed the .so: shm spin came out 8.63 µs, '4.34x' the Python ring, and only
    the floor line hinted why. The JSON now says which paths ran, the terminal's first line
    says it, and a run without the C paths starts with a warning."""
    import io

    from rich.console import Console
    from tests.bench.test_bench_plan import _minimal_document

    from ipcwire.bench.machine import implementation_warning
    from ipcwire.bench.report import render

    normal = _implementation_in_child({}, block_extension=False)
    assert normal["extension"] is True
    assert (normal["shm_ring"], normal["stream_sender"]) == ("c", "c")
    assert implementation_warning(normal) is None
    forced = _implementation_in_child({"IPCWIRE_STREAM_IMPL": "python"}, block_extension=False)
    assert (forced["shm_ring"], forced["stream_sender"]) == ("c", "python")
    assert forced["environment"] == {"IPCWIRE_STREAM_IMPL": "python"}
    warning = implementation_warning(forced)
    assert warning is not None and "unix/tcp sender" in warning and "IPCWIRE_STREAM_IMPL" in warning
    missing = _implementation_in_child({}, block_extension=True)
    assert missing["extension"] is False and missing["extension_error"]
    assert (missing["shm_ring"], missing["stream_sender"]) == ("python", "python")

    for impl, first in ((normal, "implementation: C extension"),
                        (missing, "WARNING: ipcwire's C extension did not load")):  # fmt: skip
        doc = _minimal_document()
        doc["implementation"] = impl
        assert validate(doc) == []
        out = io.StringIO()
        render(doc, Console(file=out, width=200))
        assert out.getvalue().splitlines()[0].startswith(first)


def test_a_contender_that_becomes_unavailable_after_it_ran_is_failed() -> None:
    """helper-84's flaky contender worked twice, then said MechanismUnavailable: the run
    dropped it ('not measured', its repetitions discarded, exit 0). Once a contender has
    run, going away is a failure (the CLI then exits 1); one unavailable from the start is
    still a note."""
    from tests.bench.flaky import flaky

    from ipcwire.bench.analysis import build_document
    from ipcwire.bench.runner import BenchConfig, run

    config = BenchConfig(round_trip_sizes=(64,), throughput_sizes=(64,), batched_sizes=(),
                         repeat=2, duration=0.04, warmup=0.01, only=("test/*",),
                         apis=("blocking",), peers=True, preset="test", budget=None,
                         floor=False)  # fmt: skip
    doc = build_document(run(config, extra=[flaky(2), flaky(0)]), ["test"])
    assert validate(doc) == []
    assert [u["id"] for u in doc["unavailable"]] == ["test/flaky-0"]
    assert "daemon went away" in doc["unavailable"][0]["unavailable_reason"]
    results = [r for r in doc["results"] if r["contender"] == "test/flaky-2"]
    assert len(results) == 2  # its round trip and throughput are both in the report
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) >= 1
    assert all("after it had run" in r["error"] for r in failed)
    assert sum(len(r["repetitions"]) for r in results) == 2  # the two that ran are kept
    assert any("FAILED" in n and "daemon went away" in n for n in doc["notes"])


def test_pyzmq_sends_large_messages_zero_copy_as_its_docs_advise(tmp_path: Any) -> None:
    """peer/zmq-ipc and peer/zmq-tcp sent 64 KiB with copy=True, which pyzmq's docs advise
    against for large messages. From zmq.COPY_THRESHOLD they are zero-copy; small messages
    keep pyzmq's default. The messages still arrive whole (through real sockets)."""
    import zmq

    from ipcwire.bench.contender import Task

    known = {c.id: c for c in all_contenders([])}
    for serial, (cid, size) in enumerate(
        [(c, s) for c in ("peer/zmq-ipc", "peer/zmq-tcp") for s in (64, 65536)], 1
    ):
        c = known[cid]
        task = Task(c, "throughput", size, 0, 0.0, 0.0, str(tmp_path), serial, 0)
        a = c.side_a(task, None).accept()
        b = c.side_b(task, a.address, None)
        try:
            assert b.zero_copy is a.zero_copy is (size >= zmq.COPY_THRESHOLD), (cid, size)
            message = bytes(range(256)) * (size // 256) if size >= 256 else b"x" * size
            b.send(message)
            assert bytes(a.recv()) == message
        finally:
            b.close()
            a.close()


def test_the_terminal_report_shows_every_round_trip_size() -> None:
    """The terminal table rendered round_trip_sizes[0] only: a full run's 4 KiB and 64 KiB
    round trips were in the JSON and the Markdown but not on screen."""
    import copy
    import io

    from rich.console import Console
    from tests.bench.test_bench_plan import _minimal_document

    from ipcwire.bench.report import render

    doc = _minimal_document()
    doc["config"]["round_trip_sizes"] = [64, 4096, 65536]
    for size, p50 in ((4096, 41.7), (65536, 123.4)):
        r = copy.deepcopy(doc["results"][0])
        r["size"] = size
        r["summary"]["p50_us"] = p50
        r["summary"]["p50_spread_us"] = [p50 - 1, p50 + 1]
        doc["results"].append(r)
    out = io.StringIO()
    render(doc, Console(file=out, width=200))
    text = out.getvalue()
    assert "round trip by message size" in text
    assert "4 KiB" in text and "64 KiB" in text
    assert "41.7 (40.7-42.7)" in text and "123 (122-124)" in text


def test_tails_of_too_few_samples_and_targets_of_one_repetition_are_marked() -> None:
    """The quick run's round trips had repetitions of 12 to 500 samples, yet p99 was shown
    as a number; a target from one repetition read '1.16-1.16 yes' with no mark."""
    from ipcwire.bench.analysis import tail_is_firm
    from ipcwire.bench.report import p99_label, target_marks

    few = _round_trip("raw/unix", [50.0])
    few["repetitions"][0]["round_trips"] = 12
    few["summary"]["p99_us"] = 900.0
    assert not tail_is_firm(few, "p99") and p99_label(few) == "—"
    many = _round_trip("raw/unix", [50.0, 51.0])  # 5000 round trips per repetition
    assert tail_is_firm(many, "p99") and tail_is_firm(many, "p99_9")
    assert p99_label(many) == "1.00"
    many["repetitions"][1]["round_trips"] = 999
    assert tail_is_firm(many, "p99") and not tail_is_firm(many, "p99_9")

    doc = refresh(
        _doc(
            ["raw/unix", "ipcwire/unix/blocking"],
            [_round_trip("raw/unix", [50.0]), _round_trip("ipcwire/unix/blocking", [58.0])],
        )
    )
    [t] = [t for t in doc["targets"] if t["target"].startswith("unix: blocking round trip")]
    assert t["repetitions"] == 1
    assert "(one repetition)" in target_marks(t)


def test_the_summary_says_whether_its_tails_are_firm() -> None:
    from ipcwire.bench.analysis import summarize
    from ipcwire.bench.runner import Measurement

    c = {c.id: c for c in all_contenders([])}["raw/unix"]

    def side(count: int) -> dict[str, Any]:
        lat = {k: 1000.0 for k in ("min", "p50", "p90", "p99", "p99_9", "max", "mean")}
        return {"count": count, "cpu_s": 0.01, "wall_s": 0.04, "latency_ns": lat}

    m = Measurement(c, "round_trip", 64, 0)
    m.reps = [{"a": side(n), "b": side(n)} for n in (12, 3000)]
    s = summarize(m)["summary"]
    assert s["round_trips_min"] == 12
    assert s["p99_firm"] is False and s["p99_9_firm"] is False


def test_duration_help_says_what_quick_measures() -> None:
    """--help said 'quick 0.2' while the quick run measures about 0.04 s per repetition."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ipcwire", "bench", "--help"],
                         capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    text = " ".join(out.split())
    assert "quick 0.2, full 0.5" not in text
    assert "about 0.04" in text


def test_notes_speak_only_of_what_the_run_selected_and_do_not_contradict() -> None:
    """A --contenders 'raw/unix' run printed notes about udp, signal and clipboard; and a
    run without a clipboard said 'clipboard: unreliable, so only round trips are measured'
    and then 'not measured: no clipboard here'."""
    from ipcwire.bench.analysis import build_document
    from ipcwire.bench.runner import BenchConfig, RunOutput, plan

    everything: list[str] = []
    plan(BenchConfig(), everything)
    assert any(n.startswith("udp: unreliable") for n in everything)
    only: list[str] = []
    plan(BenchConfig(only=("raw/unix",)), only)
    assert not [n for n in only if n.split(":")[0] in ("udp", "signal", "clipboard", "xpc")]
    unix: list[str] = []
    plan(BenchConfig(mechanisms=("unix",)), unix)
    assert not any(n.startswith("udp:") for n in unix)

    out = RunOutput(
        config=BenchConfig(),
        contenders=[],
        unavailable={"ipcwire/clipboard/blocking": "no clipboard here"},
        measurements=[],
        notes=["clipboard: unreliable, so only round trips are measured"],
        pinning={},
        started=0.0,
        finished=1.0,
    )
    notes = build_document(out, ["test"])["notes"]
    assert not any("unreliable" in n for n in notes)
    assert any("not measured: no clipboard here" in n for n in notes)


def test_the_hybrid_target_against_the_futex_floor_is_not_comparable_back_to_back() -> None:
    """Back to back, hybrid stays in its spin phase: '0.01x yes' against the sleeping futex
    floor said nothing about hybrid's wake-up after idle time."""
    doc = refresh(
        _doc(
            ["ipcwire/shm/blocking/spin", "ipcwire/shm/blocking/hybrid"],
            [
                _round_trip("ipcwire/shm/blocking/spin", [0.7, 0.7, 0.7]),
                _round_trip("ipcwire/shm/blocking/hybrid", [0.7, 0.7, 0.7]),
            ],
            floor={"available": True, "round_trip": [
                {"kind": "futex", "p50_us": 50.0, "p50_per_rep_us": [50.0, 50.0, 50.0]}]},
        )
    )  # fmt: skip
    [t] = [t for t in doc["targets"] if t["target"].startswith("shm: hybrid")]
    assert t["held"] is None and t["comparable"] is False and "back to back" in t["why"]
