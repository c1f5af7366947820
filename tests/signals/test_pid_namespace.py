"""signal:PID from inside a pid namespace of its own (a container, a sandbox): a process
outside it has no pid there, and the error says so instead of "it exited already". A real
pid namespace, made with util-linux ``unshare``."""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = """
import sys, ipcwire, ipcwire.signals
try:
    with ipcwire.connect(f"signal:{sys.argv[1]}") as ch:
        ch.send("USR1")
    print("sent")
except ipcwire.IpcwireError as e:
    print(f"{type(e).__name__}: {e}")
"""


def test_a_pid_outside_this_pid_namespace_is_not_said_to_have_exited() -> None:
    # Our own pid: alive, outside the child's namespace, and above any pid used in there
    # (unshare's child is 1, its interpreter 2). It said "no such process (it exited
    # already)".
    pid = os.getpid()
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", CHILD, str(pid)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout.strip()
    assert text.startswith(f"ChannelBroken: cannot send SIGUSR1 to pid {pid}: "), text
    assert "no such process in this pid namespace (pids do not cross pid namespaces" in text
