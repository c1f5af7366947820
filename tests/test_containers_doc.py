"""docs/containers.md: its shell examples run as written (real namespaces: unshare, ip netns;
names, directory and port made unique), and print what the page says they print."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs/containers.md"
BLOCKS = re.findall(r"```sh\n(.*?)```", PAGE.read_text(), re.S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_page_has_its_examples() -> None:
    assert len(BLOCKS) == 3


@pytest.mark.parametrize("block", BLOCKS, ids=["unix", "veth", "shm"])
def test_a_shell_example_runs_as_written(block: str, tmp_path: Path) -> None:
    n = os.getpid() % 100000
    netns = f"ipcdemo{n}"
    script = (
        block.replace("/tmp/ipc-demo", str(tmp_path / "d"))
        .replace("ipcdemo", netns)
        .replace("veth-host", f"vh{n}")
        .replace("veth-ns", f"vn{n}")
        .replace("@ipc-demo", f"@ipc-demo-{n}")
        .replace(":7700", f":{free_port()}")
        # a subnet of its own: two runs at once (CI beside a developer's) gave the host two
        # routes to one address, and replies reached the other run's namespace
        .replace("10.231.0.", f"10.231.{n % 256}.")
    )
    if "/tmp/ipc-demo" in block and "mkdir" not in block:
        (tmp_path / "d").mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # In a session of its own, so that its background servers (`ipcwire cat -l ... &`) go
    # with it when it fails part-way or times out (the timeout only kills bash).
    proc = subprocess.Popen(["bash", "-e", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert out.returncode == 0, out.stderr
    for expected in re.findall(r"# prints: (.*)", block):
        assert expected in out.stdout.splitlines(), (expected, out.stdout, out.stderr)
