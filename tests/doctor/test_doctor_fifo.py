"""``ipcwire doctor fifo://`` (or a FIFO's path): the FIFO, its mode, and who reads it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests._proc import NOBODY, child, kill9, wait_line
from tests.doctor._helpers import doctor, doctor_json, findings

import ipcwire
from ipcwire.doctor import diagnose
from ipcwire.errors import Timeout

LISTENER = """
import ipcwire, sys
lst = ipcwire.listen({url!r})
print("ready", flush=True)
sys.stdin.read()
"""
WRITER = """
import ipcwire, sys
ch = ipcwire.connect({url!r}, timeout=10)
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_writer_learns_that_the_reader_of_its_fifo_is_gone(sock_dir: Path) -> None:
    # "ipcwire doctor fifo:///..." said "has no checks for fifo:// yet" (exit 2), and a FIFO's
    # path was checked as a Unix socket ("is a named pipe (FIFO), not a socket").
    path = f"{sock_dir}/app.fifo"
    url = f"fifo://{path}"
    with child(LISTENER.format(url=url)) as reader:
        assert wait_line(reader) == "ready"  # the FIFO exists: a writer may come
        with child(WRITER.format(url=url)) as writer:
            assert wait_line(writer) == "ready"
            _reader_killed_while_writer_holds_it(url, path, reader, writer)
    os.unlink(path)  # what kill -9 left behind
    out = doctor(url)
    assert out.returncode == 1 and "no FIFO at" in out.stdout


def _reader_killed_while_writer_holds_it(
    url: str, path: str, reader: subprocess.Popen[str], writer: subprocess.Popen[str]
) -> None:
    code, data = doctor_json(url)
    assert code == 0, data
    [live] = findings(data, "fifo.reader")
    assert live["status"] == "ok" and live["data"]["pids"] == [reader.pid]
    assert writer.pid in live["data"]["writers"]
    [fifo] = findings(data, "fifo.file")
    assert f"{path}: FIFO, mode 0600 owned by uid 0 gid 0" in fifo["evidence"]
    kill9(reader)
    for target in (url, path):
        code, data = doctor_json(target)
        assert code == 1, data
        assert not findings(data, "unix.not_a_socket")
        [gone] = findings(data, "fifo.no_reader")
        assert gone["status"] == "problem" and gone["data"]["writers"] == [writer.pid]
        assert "start the listener" in gone["fix"]


def test_a_fifo_another_user_may_not_write_is_explained(sock_dir: Path) -> None:
    os.chmod(sock_dir, 0o755)
    path = f"{sock_dir}/private.fifo"
    os.mkfifo(path, 0o600)
    code, data = doctor_json(f"fifo://{path}", as_nobody=True)
    assert code == 1
    [denied] = findings(data, "fifo.permission")
    assert f"you are uid {NOBODY}" in " ".join(denied["evidence"])
    assert "mode=0o660" in denied["fix"]
    # to listen, an existing FIFO must be yours (listen() refuses another user's)
    assert diagnose(f"fifo://{path}", listen=True).ok
    code, data = doctor_json(f"fifo://{path}", "--listen", as_nobody=True)
    assert code == 1 and findings(data, "fifo.permission")


def test_a_listener_that_stops_reading_is_seen_when_whole_messages_fill_its_fifo(
    sock_dir: Path,
) -> None:
    # The writer's send timed out ("the peer is not reading"), yet doctor said "✓ ... open
    # for reading (the listener)" with "1043402 of 1048576 bytes queued": whole messages
    # never fill a pipe to its last byte, and fifo.full waited for exactly that. Messages
    # of about 3000 bytes take a page each: the pipe stops its writers at under 3/4 full.
    path = f"{sock_dir}/stalled.fifo"
    url = f"fifo://{path}"
    with child(LISTENER.format(url=url)) as reader:
        assert wait_line(reader) == "ready"
        with ipcwire.connect(url, timeout=10) as writer:
            with pytest.raises(Timeout, match="nothing was sent"):
                while True:
                    writer.send(b"x" * 3000, timeout=0.1)
            report = diagnose(url)
    [full] = [f for f in report.findings if f.check == "fifo.full"]
    assert full.status == "warning"
    assert full.data["pids"] == [reader.pid]
    queued, capacity = full.data["queued"], full.data["capacity"]
    assert capacity // 2 < queued < capacity - 4096  # full to its writers, far from its end
    assert f"ipcwire doctor --pid {reader.pid}" in (full.fix or "")
    assert not [f for f in report.findings if f.check == "fifo.reader"]
