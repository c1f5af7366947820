"""``ipcwire doctor --shm`` reports an mq end pipe left in /dev/shm by a client killed while
connecting (nobody holds it: a warning naming the fix), and says a held one belongs to a
channel opening. It listed neither before: it looked at regular files only."""

from __future__ import annotations

import os
import secrets

from tests._proc import child, wait_line
from tests.doctor._helpers import doctor_json, findings

from ipcwire.doctor.shm import DEV_SHM

HOLD = """
import os, sys
fd = os.open({path!r}, os.O_RDWR | os.O_NONBLOCK)
print("ready", flush=True)
sys.stdin.read()
"""


def _fifo() -> str:
    path = os.path.join(DEV_SHM, f"ipcwire-mq.doctor-test.{os.getpid()}.{secrets.token_hex(4)}.end")
    os.mkfifo(path, 0o600)
    return path


def test_a_leftover_end_pipe_is_reported_with_the_fix() -> None:
    path = _fifo()
    try:
        _, data = doctor_json("--shm")
        leaked = [f for f in findings(data, "mq.end_pipe_leaked") if f["data"]["path"] == path]
        assert len(leaked) == 1, findings(data, "mq.end_pipe_leaked")
        assert leaked[0]["status"] == "warning"
        assert f"rm {path}" in leaked[0]["fix"]
    finally:
        os.unlink(path)


def test_an_end_pipe_someone_holds_is_not_a_leak() -> None:
    path = _fifo()
    try:
        with child(HOLD.format(path=path)) as proc:
            assert wait_line(proc) == "ready"
            _, data = doctor_json("--shm")
            held = [f for f in findings(data, "mq.end_pipe") if f["data"]["path"] == path]
            assert len(held) == 1 and held[0]["data"]["pids"] == [proc.pid]
            assert not [
                f for f in findings(data, "mq.end_pipe_leaked") if f["data"]["path"] == path
            ]
    finally:
        os.unlink(path)
