"""``ipcwire doctor spool://`` with the spool's .order lock kept by a stopped process while
messages wait: the holder is named (pid, command, stopped) with the fix, not "ok"."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests._proc import child, wait_line
from tests.doctor._helpers import doctor_json, findings

import ipcwire
from ipcwire.doctor import check_spool

HOLDER = """
import fcntl, os, sys
fd = os.open({path!r}, os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_order_held_by_a_stopped_process_while_messages_wait(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    url = f"spool://{spool}"
    with ipcwire.connect(url, fsync=False) as producer:
        producer.send(b"job")
    with child(HOLDER.format(path=str(spool / ".order"))) as holder:
        assert wait_line(holder) == "held"
        os.kill(holder.pid, signal.SIGSTOP)
        os.waitpid(holder.pid, os.WUNTRACED)  # returns once it is stopped
        code, data = doctor_json(url)
        assert code == 1
        [held] = findings(data, "spool.order_held")
        assert held["status"] == "problem"
        assert f"pid {holder.pid} (" in held["summary"]
        assert "1 message(s) wait in new/" in held["summary"]
        assert "(stopped)" in "\n".join(held["evidence"])
        assert f"kill -CONT {holder.pid}" in held["fix"]
        assert held["data"]["pids"] == [holder.pid]
        os.kill(holder.pid, signal.SIGKILL)  # the fix: end it
        holder.wait(timeout=20)
    report = check_spool(str(spool))
    assert report.ok and not report.find("spool.order_held")
    with ipcwire.connect(url) as consumer:
        assert consumer.recv(timeout=5) == b"job"
