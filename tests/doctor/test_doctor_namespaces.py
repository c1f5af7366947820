"""``ipcwire doctor`` run inside a sandbox (other network namespace, other uid): what it can
not see there is said to be unknown, never stale. Real namespaces, made with util-linux
``unshare``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests._proc import NOBODY

import ipcwire


def in_sandbox(code: str, *unshare: str, as_nobody: bool = False) -> Any:
    """Run ``code`` under ``unshare ARGS`` (optionally dropping to uid nobody after the
    imports); it prints one JSON document, returned decoded."""
    drop = f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n" if as_nobody else ""
    prologue = (
        "import os, sys, json, errno\n"
        "import ipcwire, ipcwire.unix.blocking, ipcwire.tcp.blocking, ipcwire.doctor\n"
        "import mmap, ipcwire.shm._segment, ipcwire.doctor.machine\n"
        "from ipcwire.doctor import check_machine, diagnose\n"
        "ipcwire.mechanisms()\n" + drop
    )
    out = subprocess.run(
        ["unshare", *unshare, sys.executable, "-c", prologue + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_live_socket_not_ours_to_probe_from_a_sandbox_is_not_called_stale(
    sock_dir: Path,
) -> None:
    # An orchestrator's 0600 socket, seen from an agent's sandbox (own network namespace,
    # another uid): sock_diag does not see it bound, connect() says EACCES. Doctor said
    # "stale socket file(s) ... rm PATH".
    sock_dir.chmod(0o755)
    path = f"{sock_dir}/orch.sock"
    with ipcwire.listen(f"unix://{path}"):
        data = in_sandbox(
            """
            r = check_machine()
            print(json.dumps({
                "stale": [p for f in r.find("machine.stale_sockets") for p in f.data["paths"]],
                "unknown": [f.summary for f in r.find("machine.unknown_sockets")],
                "paths": [p for f in r.find("machine.unknown_sockets") for p in f.data["paths"]],
            }))
            """,
            "--net",
            as_nobody=True,
        )
    assert path not in data["stale"]
    assert path in data["paths"]
    [summary] = data["unknown"]
    assert "cannot be told live or stale" in summary
    assert "another network namespace" in summary
