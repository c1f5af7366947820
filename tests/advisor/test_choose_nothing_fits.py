"""``ipcwire choose`` when no mechanism fits: the answer says which requirement rules out
what, and what to do (run as a user runs it: the CLI in a subprocess)."""

from __future__ import annotations

import json

from tests.advisor.test_choose_cli import choose


def test_durable_across_machines_says_why_nothing_fits_and_what_to_do() -> None:
    """--durable --distance may-move ended in "No registered mechanism fits" and nothing else."""
    out = choose("--durable", "--distance", "may-move", "--json")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert data["recommended"] is None
    [warning] = [w for w in data["warnings"] if "Nothing here has everything" in w]
    assert "only File spool (spool)" in warning
    assert "the processes may move to other machines (--distance may-move)" in warning
    assert "Drop one of --durable, --distance may-move" in warning
    assert "message broker" in warning and "outside ipcwire" in warning
    text = " ".join(choose("--durable", "--distance", "may-move").stdout.split())
    assert "warning: Nothing here has everything asked for" in text


def test_durable_and_tells_failure_names_the_conflict() -> None:
    out = choose("--durable", "--tells-failure")
    assert out.returncode == 1, out.stderr
    text = " ".join(out.stdout.split())
    assert "only File spool (spool) does that, but it cannot meet: each side must tell" in text
    assert "Drop one of --durable, --tells-failure" in text
    assert "AMQP broker" in text
