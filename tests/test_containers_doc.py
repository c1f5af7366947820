"""docs/containers.md: its shell examples run as written (real namespaces: unshare, ip netns;
names, directory and port made unique), and print what the page says they print."""

from __future__ import annotations

import os
import re
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
    )
    if "/tmp/ipc-demo" in block and "mkdir" not in block:
        (tmp_path / "d").mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        out = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True,
                             timeout=30, env=env, check=False)  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    for expected in re.findall(r"# prints: (.*)", block):
        assert expected in out.stdout.splitlines(), (expected, out.stdout, out.stderr)
