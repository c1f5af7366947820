"""A consumer killed (kill -9) while it redelivers a message whose lease expired.

The redelivery writes a copy into tmp/, then takes the original out of cur/. Before, a
reaper delivered any copy in tmp/ whose original was no longer in cur/: also one whose
writer died half-way and whose original had been acked since (half a message, after an
ack() that said True). Now the original is moved to ``tmp/~NAME`` once the copy is
complete: a copy is delivered only with that mark beside it.

The reaper is a real process, stopped at the chosen point (its code patched there to wait)
and killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ipcwire
from ipcwire.spool.blocking import SpoolChannel

SIZE = 1 << 20

# Reaps once, and stops (for the kill) where ``sys.argv[2]`` says: "write", after the first
# 64 KiB of the copy; "finish", after the original left cur/ and before the copy is in new/.
REAPER = f"""
import os, sys
SIZE = {SIZE}
import ipcwire
from ipcwire.spool._consume import Consuming
def stop():
    print("stopped", flush=True)
    sys.stdin.read()
if sys.argv[2] == "write":
    real = os.write
    def write(fd, data):
        if len(data) == SIZE:
            real(fd, bytes(data)[: 1 << 16])
            stop()
        return real(fd, data)
    os.write = write
else:
    Consuming._finish_steal = lambda self, name: stop()
ipcwire.connect(sys.argv[1]).store.reap()
"""


def _open(url: str) -> SpoolChannel:
    ch = ipcwire.connect(url, codec="raw")
    assert isinstance(ch, SpoolChannel)
    return ch


def _age(d: Path, seconds: float) -> None:
    old = time.time() - seconds
    for name in os.listdir(d):
        os.utime(d / name, (old, old), follow_symlinks=False)


def _kill_reaper_at(url: str, where: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(REAPER), url, where],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "stopped\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_half_a_copy_is_never_delivered_after_the_ack(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q?lease=5&fsync=0"
    q = spool_dir / "q"
    with _open(url) as p:
        p.send(b"m" * SIZE)
    with _open(url) as holder, _open(url) as other:
        delivery = holder.claim(timeout=5)
        _age(q / "cur", 60)  # held past its lease
        _kill_reaper_at(url, "write")
        assert [os.path.getsize(q / "tmp" / n) for n in os.listdir(q / "tmp")] == [1 << 16]
        assert delivery.ack() is True  # the holder finishes it: nothing is to come again
        _age(q / "tmp", 120)  # the half copy is abandoned
        other.store.reap()
        assert other.store.counts() == {"tmp": 0, "new": 0, "cur": 0, "dead": 0}


def test_a_complete_copy_whose_reaper_died_is_delivered_once(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q?lease=5&fsync=0"
    q = spool_dir / "q"
    with _open(url) as p:
        p.send(b"m" * SIZE)
    with _open(url) as holder, _open(url) as other:
        delivery = holder.claim(timeout=5)
        _age(q / "cur", 60)
        _kill_reaper_at(url, "finish")  # the original left cur/; its copy is in tmp/
        assert delivery.ack() is False  # it was taken back: it comes again
        again = other.claim(timeout=5)  # (the claim's reap finishes the redelivery)
        assert again.message == b"m" * SIZE and again.attempt == 1
        assert again.ack() is True
        other.store.reap()
        assert other.store.counts() == {"tmp": 0, "new": 0, "cur": 0, "dead": 0}
