"""Once the last waiter or graceful shutdown is closed (in the main thread), nothing of the
dispatcher is left: the wakeup fd is given back, its thread has ended, its pipe is closed.

Before, the first waiter made them for the life of the process: the wakeup fd stayed ipcwire's
pipe (a library that takes the wakeup fd next finds it set: trio warns of a collision), and a
thread and two descriptors stayed. A later waiter starts them again.
"""

from __future__ import annotations

from tests._proc import run_python

CHILD = """
import os, signal, threading
from ipcwire.signals import SignalWaiter, graceful_shutdown


def fds():
    return sorted(os.listdir("/proc/self/fd"))


def state():
    wakeup = signal.set_wakeup_fd(-1)  # (-1 again right after: only a question)
    signal.set_wakeup_fd(wakeup)
    names = sorted(t.name for t in threading.enumerate() if t.name.startswith("ipcwire"))
    return wakeup, names, len(fds())


before = state()
for round in range(3):
    with SignalWaiter(["USR1"]) as waiter:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert waiter.recv(timeout=10) is signal.SIGUSR1
    with graceful_shutdown(signals=["USR2"], exit=False):
        pass
    now = state()
    print("True" if now == before else f"False {now} (before: {before})")
"""


def test_the_last_close_leaves_no_wakeup_fd_thread_or_pipe() -> None:
    out = run_python(CHILD, timeout=60)
    assert out.split("\n") == ["True"] * 3, out  # before: False (5, ['ipcwire signals'], 6) ...
