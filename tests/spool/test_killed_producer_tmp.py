"""A producer killed in the middle of writing a message: its half-written file in tmp/ goes at
the next reap, not a minute later.

Before, a consumer removed an unlocked tmp/ file only once it was 60 s old, whoever had
written it: a producer killed during a 60 MB send left 23 MB there for at least that long
(found by a newcomer walkthrough). The producer's pid is in the file's name; once no such
process exists and nothing holds the file's lock, the file is removed at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ipcwire

# What a producer leaves when killed mid-write: tmp/NAME, named with its pid, flock'd while
# being written (ipcwire.spool._store.SpoolStore._write_tmp), part of the payload in it.
WRITER = """
import fcntl, os, sys, time
name = f"{time.time_ns():020d}.{os.getpid()}-0badcafe.0000000001.0"
fd = os.open(os.path.join(sys.argv[1], "tmp", name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"x" * (1 << 20))
print(name, flush=True)
sys.stdin.read()  # writing on, until killed
"""


def _writer(spool: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(spool)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, spool / "tmp" / proc.stdout.readline().strip()


def test_a_killed_producers_file_goes_at_the_next_reap(spool_dir: Path) -> None:
    spool = spool_dir / "jobs"
    with ipcwire.connect(f"spool://{spool}?reap_interval=0.05") as q:
        alive, alive_file = _writer(spool)
        killed, killed_file = _writer(spool)
        try:
            killed.send_signal(signal.SIGKILL)
            killed.wait()
            assert killed_file.exists()
            with pytest.raises(ipcwire.Timeout):
                q.recv(timeout=0.5)  # reaps every 0.05 s meanwhile
            assert not killed_file.exists()
            assert alive_file.exists()  # its writer lives: left alone
            assert os.path.getsize(alive_file) == 1 << 20
        finally:
            alive.kill()
            alive.wait()
