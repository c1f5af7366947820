"""``ipcwire choose`` on the situations a tech lead's walkthrough found it wrong for (run as a
user runs it: the CLI in a subprocess, with bench reports written as ``ipcwire bench`` writes
them)."""

from __future__ import annotations

from tests.advisor.test_choose_cli import choose, choose_json


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
