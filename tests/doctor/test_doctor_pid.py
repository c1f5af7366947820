"""``ipcwire doctor --pid``: real processes deadlocked on full pipes, unreaped children,
surprising signal dispositions, and the endpoints a process holds."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests._proc import child, run_python, wait_line, wait_until
from tests.doctor._helpers import doctor_json, findings

from ipcwire._procfs import proc_stat, wchan
from ipcwire.doctor import check_pid

# A parent that writes 1 MB to its child's stdin before reading anything, while the child
# writes 1 MB to its stdout before reading anything: both block on full 64 KiB pipes.
DEADLOCK = """
import subprocess, sys
kid = subprocess.Popen(
    [sys.executable, "-c",
     "import sys; sys.stdout.buffer.write(b'x' * 1000000); sys.stdout.flush(); "
     "sys.stdin.buffer.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
print(kid.pid, flush=True)
kid.stdin.write(b"y" * 1000000)
kid.stdin.close()
print(len(kid.stdout.read()), flush=True)
"""

# The fix the doctor prints: communicate() writes and reads at the same time.
FIXED = """
import subprocess, sys
kid = subprocess.Popen(
    [sys.executable, "-c",
     "import sys; sys.stdout.buffer.write(b'x' * 1000000); sys.stdout.flush(); "
     "sys.stdin.buffer.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
out, _ = kid.communicate(b"y" * 1000000, timeout=20)
print(len(out))
"""

# The classic: the parent waits for the child without reading the stderr it asked for.
STDERR_NEVER_READ = """
import subprocess, sys
kid = subprocess.Popen(
    [sys.executable, "-c", "import sys; sys.stderr.buffer.write(b'e' * 1000000)"],
    stderr=subprocess.PIPE)
print(kid.pid, flush=True)
kid.wait()
"""


def _blocked_writing(pid: int) -> bool:
    return "pipe_write" in (wchan(pid) or "")


def _state(pid: int) -> str:
    st = proc_stat(pid)
    return st.state if st else "gone"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_pipe_buffer_deadlock_between_two_real_processes() -> None:
    with child(DEADLOCK) as parent:
        kid = int(wait_line(parent))
        try:
            assert wait_until(lambda: _blocked_writing(parent.pid) and _blocked_writing(kid))
            code, data = doctor_json("--pid", str(parent.pid))
            assert code == 1
            [dead] = findings(data, "pid.deadlock")
            assert dead["data"]["pids"] == sorted([parent.pid, kid])
            assert len(dead["data"]["pipes"]) == 2
            evidence = "\n".join(dead["evidence"])
            assert "65536 of 65536 bytes queued" in evidence
            assert "write(fd " in evidence and "pipe_write" in evidence
            assert "communicate()" in dead["fix"]
            # Seen from the other side, it is the same deadlock.
            assert check_pid(kid).find("pid.deadlock")[0].data["pids"] == dead["data"]["pids"]
        finally:
            _kill(kid)
    assert run_python(FIXED) == "1000000"  # the fix works


def test_parent_waiting_for_a_child_that_fills_an_unread_stderr() -> None:
    with child(STDERR_NEVER_READ) as parent:
        kid = int(wait_line(parent))
        try:
            assert wait_until(lambda: _blocked_writing(kid) and "wait" in (wchan(parent.pid)
                                                                          or ""))  # fmt: skip
            report = check_pid(parent.pid)
            [dead] = report.find("pid.deadlock")
            assert dead.data["pids"] == sorted([parent.pid, kid])
            assert any("waits for a child to exit" in e for e in dead.evidence)
        finally:
            _kill(kid)


ZOMBIE_MAKER = """
import subprocess, sys
kid = subprocess.Popen(["true"])
print(kid.pid, flush=True)
sys.stdin.readline()
kid.wait()
print("reaped", flush=True)
sys.stdin.read()
"""


def test_zombie_children_are_named_and_reaping_them_fixes_it() -> None:
    with child(ZOMBIE_MAKER) as parent:
        kid = int(wait_line(parent))
        assert wait_until(lambda: _state(kid) == "Z")
        [zombies] = check_pid(parent.pid).find("pid.zombies")
        assert zombies.status == "problem" and zombies.data["pids"] == [kid]
        assert zombies.fix is not None and "wait()" in zombies.fix
        [zombie] = check_pid(kid).problems
        assert zombie.check == "pid.zombie" and f"--pid {parent.pid}" in str(zombie.fix)
        assert parent.stdin is not None
        parent.stdin.write("reap\n")
        parent.stdin.flush()
        assert wait_line(parent) == "reaped"
        assert not check_pid(parent.pid).find("pid.zombies")


SIGNALS = """
import signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
print("ready", flush=True)
sys.stdin.readline()
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
print("fixed", flush=True)
sys.stdin.read()
"""


def test_sigterm_ignored_and_sigpipe_default_are_warned_about() -> None:
    with child(SIGNALS) as proc:
        assert wait_line(proc) == "ready"
        report = check_pid(proc.pid)
        [term] = report.find("pid.sigterm")
        assert term.status == "warning" and "SIGTERM is ignored" in term.summary
        [pipe] = report.find("pid.sigpipe")
        assert "SIGPIPE has its default action" in pipe.summary
        assert any(e.startswith("SigIgn:") and "SIGTERM" in e for e in term.evidence)
        assert proc.stdin is not None
        proc.stdin.write("fix\n")
        proc.stdin.flush()
        assert wait_line(proc) == "fixed"
        report = check_pid(proc.pid)
        assert not report.find("pid.sigterm") and not report.find("pid.sigpipe")
        assert signal.SIGTERM in report.find("pid.signals")[0].data["caught"]


ENDPOINTS = """
import os, sys, ipcwire
u = ipcwire.listen("unix://{dir}/ep.sock")
t = ipcwire.listen("tcp://127.0.0.1:0")
os.mkfifo("{dir}/ep.fifo")
f = os.open("{dir}/ep.fifo", os.O_RDWR)
os.write(f, b"12345")
print(t.url.rsplit(":", 1)[1], flush=True)
sys.stdin.read()
"""


def test_endpoints_of_a_process_are_listed(sock_dir: Path) -> None:
    with child(ENDPOINTS.format(dir=sock_dir)) as proc:
        port = wait_line(proc)
        lines = check_pid(proc.pid).find("pid.endpoints")[0].evidence
        text = "\n".join(lines)
        assert f"Unix socket {sock_dir}/ep.sock (listening)" in text
        assert f"TCP 127.0.0.1:{port} LISTEN" in text
        assert f"FIFO {sock_dir}/ep.fifo, 5 of 65536 bytes queued" in text
        assert "pipe:[" in text  # its stdin/stdout


def test_missing_process() -> None:
    [missing] = check_pid(2**22 + 12345).problems
    assert missing.check == "pid.missing"


def test_writer_blocked_on_a_reader_that_is_busy_elsewhere_is_a_warning() -> None:
    # The child fills its stdout; this test process holds the read end and does not read,
    # but it is running, not stuck: no deadlock, a warning naming who should read.
    with child("import sys; sys.stdout.buffer.write(b'z' * 1000000); sys.stdout.flush()") as proc:
        assert wait_until(lambda: _blocked_writing(proc.pid))
        report = check_pid(proc.pid)
        assert not report.find("pid.deadlock")
        [blocked] = report.find("pid.blocked_on_pipe")
        assert blocked.status == "warning" and os.getpid() in blocked.data["waiting_for"]


SELF_PIPE = """
import os
r, w = os.pipe()
print("ready", flush=True)
os.write(w, b"x" * 200000)  # more than the pipe holds, and only this process reads it
"""


def test_a_process_blocked_on_a_pipe_only_it_reads() -> None:
    # Reported as "pid N each wait for the other ... kill one side", about one process.
    with child(SELF_PIPE) as proc:
        assert wait_line(proc) == "ready"
        assert wait_until(lambda: _blocked_writing(proc.pid))
        [dead] = check_pid(proc.pid).find("pid.deadlock")
        assert dead.data["pids"] == [proc.pid]
        assert "a full pipe that only it reads" in dead.summary
        assert "each wait for the other" not in dead.summary
        assert dead.fix is not None and "another thread" in dead.fix
