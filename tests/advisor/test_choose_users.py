"""``ipcwire choose`` for processes of several users on one host: a Unix socket (FIFO, shared
memory) is 0600 by default, and a name in /tmp can be squatted; the answer says so (run as a
user runs it: the CLI in a subprocess)."""

from __future__ import annotations

from tests.advisor.test_choose_cli import choose, choose_json


def test_every_unix_answer_says_other_users_are_refused_and_how_to_share() -> None:
    data = choose_json()
    rec = data["recommended"]
    assert rec["scheme"] == "unix", data
    text = " ".join(rec["caveats"])
    assert "0600" in text and "mode=0o660" in text and "allow_uids=" in text
    assert "/tmp" in text and "squatting" in text
    assert '"Who is the server?"' in text
    out = choose()
    assert "caveat: one user only: the socket is created 0600" in " ".join(out.stdout.split())
    # a FIFO and shared memory say it too
    fifo = choose_json("--direction", "one-way", "--pattern", "fire-and-forget")["recommended"]
    assert fifo["scheme"] == "fifo" and any("0600" in c for c in fifo["caveats"]), fifo
    shm = choose_json("--throughput", "2GB/s")["recommended"]
    assert shm["scheme"] == "shm" and any("0600" in c for c in shm["caveats"]), shm


def test_several_users_get_a_shared_directory_and_the_why() -> None:
    data = choose_json("--users", "several")
    rec = data["recommended"]
    assert rec["url"] == "unix:///run/app/app.sock", rec
    assert "several users:" in rec["because"] and "allow_uids=" in rec["because"]
    assert not any("0600" in c for c in rec["caveats"])  # in the why, not repeated
    shm = choose_json("--users", "several", "--throughput", "2GB/s")["recommended"]
    assert shm["url"] == "shm:///run/app/app.sock", shm


def test_the_interactive_questions_ask_about_users() -> None:
    # relation, agents, direction, receivers, distance, then users
    data = choose_json("-i", stdin="\n" * 5 + "several\n" + "\n" * 30)
    assert data["answers"]["users"] == "several"
