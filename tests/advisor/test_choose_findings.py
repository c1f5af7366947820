"""``ipcwire choose`` on the situations a tech lead's walkthrough found it wrong for (run as a
user runs it: the CLI in a subprocess, with bench reports written as ``ipcwire bench`` writes
them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.advisor._bench_doc import bench_doc
from tests.advisor.test_choose_cli import choose, choose_json

import ipcwire


def _bench(tmp_path: Path, rows: list[tuple[str, str, str, float]]) -> str:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench_doc(rows)))
    return str(path)


def test_one_producer_several_receivers_gets_a_listener_not_a_fifo() -> None:
    for pattern in ("fire-and-forget", "streaming"):
        data = choose_json("--direction", "one-way", "--pattern", pattern, "--receivers", "several")
        schemes = [data["recommended"]["scheme"], data["runner_up"]["scheme"]]
        assert "fifo" not in schemes, data
        assert data["recommended"]["scheme"] == "unix"
        assert "each receiver connects" in data["recommended"]["how"]
    # the camera: 480 MB/s of 8 MiB frames to three consumers
    camera = ("--throughput", "480MB/s", "--direction", "one-way", "--size", "8M")
    data = choose_json(*camera, "--receivers", "several")
    assert data["recommended"]["scheme"] == "shm"
    assert "ring of its own" in data["recommended"]["how"]


def test_a_fifo_answer_says_it_has_one_reader() -> None:
    out = choose("--direction", "one-way", "--pattern", "fire-and-forget")
    assert out.returncode == 0, out.stderr
    assert "fifo:///" in out.stdout.splitlines()[0]
    assert "one reader" in out.stdout and "--receivers several" in out.stdout


def test_a_one_way_mechanism_is_not_demoted_for_a_round_trip_it_cannot_have(
    tmp_path: Path,
) -> None:
    """SSE has no round trip: with --latency, WebSocket (which has one) was put first, and
    showed SSE's reason ("the browser's EventSource ...") as its own."""
    bench = _bench(tmp_path, [("ws", "park", "round_trip", 94.0),
                              ("ws", "park", "throughput", 1.3e9),
                              ("sse+http", "park", "throughput", 7e8)])  # fmt: skip
    data = choose_json("--browser", "server-to-client", "--latency", "1ms", "--bench", bench)
    rec, runner = data["recommended"], data["runner_up"]
    assert rec["scheme"] == "sse+http", data
    assert rec["meets_requirements"] is True
    assert "one-way" in rec["not_applicable"][0]
    assert runner["scheme"] == "ws"
    assert "EventSource" not in runner["because"]
    out = choose("--browser", "server-to-client", "--latency", "1ms", "--bench", bench)
    assert "does not apply: round trip: Server-Sent Events is one-way" in out.stdout


def test_every_part_of_a_combined_pick_is_judged(tmp_path: Path) -> None:
    """pipe + sse+http was judged on the pipe's numbers alone."""
    bench = _bench(tmp_path, [("pipe", "park", "throughput", 2e9),
                              ("sse+http", "park", "throughput", 5e8)])  # fmt: skip
    data = choose_json("--agents", "web-ui", "--throughput", "1GB/s", "--bench", bench)
    combined = [c for c in [data["recommended"], data["runner_up"], *data["others"]]
                if c["scheme"] == "pipe" and c["also"] == ["sse+http"]]  # fmt: skip
    assert combined, data
    measured = {m["scheme"]: m["meets"] for m in combined[0]["measured"]}
    assert measured == {"pipe": True, "sse+http": False}
    assert combined[0]["meets_requirements"] is False


def test_the_output_says_why_the_measurements_changed_the_order(tmp_path: Path) -> None:
    bench = _bench(tmp_path, [("unix", "park", "round_trip", 60.0),
                              ("tcp", "park", "round_trip", 5.0)])  # fmt: skip
    data = choose_json("--latency", "10us", "--bench", bench)
    assert data["recommended"]["scheme"] == "tcp"
    assert any("ahead of the rules' first choice unix" in n for n in data["notes"]), data


def test_an_answer_across_machines_says_tls_and_a_token_are_needed() -> None:
    """--distance may-move gave http://127.0.0.1:8080/ipc with nothing about TLS or auth."""
    rec = choose_json("--distance", "may-move")["recommended"]
    assert rec["scheme"] == "http"
    [caveat] = rec["caveats"]
    assert "https://" in caveat and "token=" in caveat and "docs/mechanisms/rest.md" in caveat
    rec = choose_json("--distance", "may-move", "--pattern", "streaming")["recommended"]
    assert rec["scheme"] == "ws" and "wss://" in rec["caveats"][0]
    rec = choose_json("--distance", "may-move", "--pattern", "fire-and-forget")["recommended"]
    assert rec["scheme"] == "udp" and "no TLS" in rec["caveats"][0]
    out = choose("--distance", "may-move")
    assert "caveat: across machines" in out.stdout
    # one machine: nothing about TLS (only the one-user caveat of a Unix socket)
    assert not any("across machines" in c for c in choose_json()["recommended"]["caveats"])


def test_container_advice_does_not_say_loopback_crosses_namespaces() -> None:
    """The tcp runner-up said loopback TCP serves "containers without a common volume", but
    127.0.0.1 is each network namespace's own (docs/containers.md)."""
    runner = choose_json()["runner_up"]
    assert runner["scheme"] == "tcp"
    assert "containers without a common volume" not in runner["how"]
    assert "veth" in runner["how"] and "docs/containers.md" in runner["how"]
    shm = choose_json("--throughput", "2GB/s")["recommended"]
    assert shm["scheme"] == "shm" and "shm:///" in shm["how"]


def test_without_numbers_the_output_says_how_to_get_them() -> None:
    """README and --help promise "this machine's numbers"; without --latency/--throughput
    and --bench the output had none, and no hint."""
    out = choose()
    assert out.returncode == 0, out.stderr
    assert "--bench" in out.stdout and "--measure" in out.stdout
    assert any("ipcwire bench --json" in n for n in choose_json()["notes"])


def test_a_number_from_another_size_or_row_says_which(tmp_path: Path) -> None:
    """--size 8M against a report without 8 MiB round trips judged 64 B ones without a word,
    and a throughput (the best of any size and API) did not say which row it was."""
    bench = _bench(tmp_path, [("unix", "park", "round_trip", 40.0),
                              ("unix", "park", "throughput", 2e9)])  # fmt: skip
    data = choose_json("--size", "8M", "--latency", "1ms", "--bench", bench)
    texts = [m["text"] for m in data["recommended"]["measured"]]
    [rt] = [t for t in texts if t.startswith("round trip")]
    assert "no 8 MiB round trip in these numbers: judged at 64 B" in rt
    [bw] = [t for t in texts if t.startswith("throughput")]
    assert "the best row: ipcwire/unix/blocking/park, 64 KiB messages" in bw
    data = choose_json("--latency", "1ms", "--bench", bench)  # 64 B asked, 64 B measured
    assert all("judged at" not in m["text"] for m in data["recommended"]["measured"])


def test_spawned_agents_that_must_tell_failure_still_get_spawn() -> None:
    """--tells-failure --agents spawned dropped spawn()'s pipes ("tells_failure is false"),
    though the parent, the side that watches, gets ChannelBroken with the child's status."""
    child = ipcwire.spawn([sys.executable, "-c", "import sys; sys.exit(3)"])
    with child, pytest.raises(ipcwire.ChannelBroken, match="3"):
        child.recv(timeout=10)
    data = choose_json("--tells-failure", "--agents", "spawned")
    rec = data["recommended"]
    assert rec["scheme"] == "pipe", data
    assert any("ChannelBroken" in c and "exit_on_parent_death" in c for c in rec["caveats"])
    # an unrelated pair still needs a mechanism that tells failure from both ends
    assert choose_json("--tells-failure")["recommended"]["scheme"] != "pipe"


def test_a_latency_needs_a_unit_and_no_requirement_is_zero() -> None:
    """--latency 10 silently meant 10 µs; --latency 0us and --throughput 0 were accepted."""
    for args, words in ((("--latency", "10"), "has no unit"),
                        (("--latency", "0us"), "more than 0"),
                        (("--throughput", "0"), "leave it out")):  # fmt: skip
        out = choose(*args)
        assert out.returncode == 2, (args, out.stdout)
        assert args[0] in out.stderr and words in out.stderr
    assert choose("--latency", "10us", "--throughput", "1GB/s").returncode == 0


def test_the_idle_sleep_warning_does_not_quote_what_the_user_did_not_say(
    tmp_path: Path,
) -> None:
    """'you said it must sleep when idle' when the user had not (it is the default)."""
    bench = _bench(tmp_path, [("shm", "spin", "round_trip", 0.8),
                              ("unix", "park", "round_trip", 45.0)])  # fmt: skip
    data = choose_json("--latency", "1us", "--bench", bench)
    [spin] = [w for w in data["warnings"] if "keeps a core busy" in w]
    assert "you said" not in spin and "the default" in spin
