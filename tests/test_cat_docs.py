"""docs/cat.md's examples run as written: each ```sh block in bash, its stdout compared with
the ```text block under it. Its /tmp/ paths move into a private directory and port 7000 to a
free one; `ipcwire` is this venv's console script and `node` the one ./dev test installs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs/cat.md"
EXAMPLES = re.findall(r"```sh\n(.*?)```\n\n```text\n(.*?)```", PAGE.read_text(), re.S)


def _held_port() -> socket.socket:
    """A socket bound (SO_REUSEADDR) to a free port and not listening, kept open while the
    example runs: no other process (the other pytest worker's) gets the port from a bind to
    port 0 or a connect, which skip it, while the example's servers (Node.js, ipcwire cat,
    both SO_REUSEADDR) may listen there; a connection before they do is refused."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


def test_every_sh_block_has_its_output() -> None:
    assert len(EXAMPLES) == PAGE.read_text().count("```sh\n") >= 4
    text = " ".join(script for script, _ in EXAMPLES)
    for words in ("--listen", "--framing ndjson", "node -e", "/dev/tcp", "--token-file"):
        assert words in text, words


@pytest.mark.parametrize(("script", "output"), EXAMPLES, ids=lambda s: s.splitlines()[0][:40])
def test_example_runs_as_written(script: str, output: str, sock_dir: Path) -> None:
    assert shutil.which("node"), "Node.js is missing: run the tests with ./dev test"
    held = _held_port()
    script = script.replace("/tmp/", f"{sock_dir}/").replace("7000", str(held.getsockname()[1]))
    bin_dir = os.path.dirname(sys.executable)
    with held:
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=sock_dir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]},
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout == output
    assert "Traceback" not in out.stderr
