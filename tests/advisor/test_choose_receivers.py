"""``ipcwire choose`` with several receivers: every pick must serve several channels at once
(the registry's multi_client), whatever rule offers it, not only by the rules' order (run as
a user runs it: the CLI in a subprocess)."""

from __future__ import annotations

from tests.advisor.test_choose_cli import choose, choose_json


def test_a_parent_with_several_receivers_gets_no_pipe() -> None:
    """Rule parent-child comes before one-to-many: it gave a pipe (one reader) to several."""
    data = choose_json("--direction", "one-way", "--receivers", "several",
                       "--relation", "parent-child")  # fmt: skip
    assert data["recommended"]["scheme"] == "unix", data
    parent_child = next(s for s in data["path"] if s["rule"] == "parent-child")
    [pipe] = [c for c in parent_child["considered"] if c["pick"] == "pipe"]
    assert "multi_client is false" in pipe["skipped"]
    assert "several receivers" in pipe["skipped"]


def test_spawned_agents_keep_a_pipe_each() -> None:
    data = choose_json("--direction", "one-way", "--receivers", "several", "--agents", "spawned")
    assert data["recommended"]["scheme"] == "pipe", data


def test_a_spool_is_not_offered_to_several_receivers() -> None:
    """A spool gives each message to one consumer; it was the answer for several receivers."""
    out = choose("--durable", "--direction", "one-way", "--receivers", "several")
    assert out.returncode == 1, out.stdout
    text = " ".join(out.stdout.split())
    assert "Drop one of --durable, --receivers several" in text
