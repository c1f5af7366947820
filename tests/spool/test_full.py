"""A spool that cannot take a message (full disk, file size limit) says so, names the fix,
and leaves nothing half-written behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests._proc import run_python

SEND = """
import sys, ipcwire
with ipcwire.connect("spool://" + sys.argv[1] + "/q") as ch:
    ch.send(b"small")
    try:
        ch.send_many([b"x" * 100_000, b"y" * 100_000])
    except ipcwire.ResourceExhausted as exc:
        print("ERROR:", exc)
    print(sorted(ch.store.counts().items()))
"""


def test_over_the_file_size_limit_is_resource_exhausted(spool_dir: Path) -> None:
    out = run_python(
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))\n"
        f"sys.argv[1:] = [{str(spool_dir)!r}]\n" + SEND
    )
    assert "ulimit -f" in out and "nothing of this send was queued" in out, out
    assert "[('cur', 0), ('dead', 0), ('new', 1), ('tmp', 0)]" in out


def test_a_full_disk_is_resource_exhausted(spool_dir: Path) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare(1) and root to mount a small tmpfs in a private namespace")
    small = spool_dir / "small"
    small.mkdir()
    proc = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            f'mount -t tmpfs -o size=64k none "$1" && exec "{sys.executable}" -c "$2" "$1"',
            "sh",
            str(small),
            SEND,
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "No space left on device" in out and "free space" in out, out
    assert "nothing of this send was queued" in out
    assert "[('cur', 0), ('dead', 0), ('new', 1), ('tmp', 0)]" in out
