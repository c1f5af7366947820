"""A signal storm does not nest ipcwire's handler without bound.

CPython runs a Python-level handler again inside itself when another signal comes while it
runs. A probe (one process sending SIGUSR1 in a loop to a process with one ``SignalWaiter``)
ended within seconds in a ``RecursionError`` raised out of whatever the main thread was doing
(a plain handler of the same size survived the same storm). A nested call of ipcwire's handler
now only notes its signal, and the outer call handles it.

Here the storm is made exact: the handler that ipcwire falls back to (the waiter was closed
from another thread, so its handler stays and behaves as the previous one) raises the signal
again each time it runs, which is "another signal came while the handler ran", every time.
"""

from __future__ import annotations

from tests._proc import run_python

STORM = """
import signal, sys, threading
from ipcwire.signals import SignalWaiter

calls = [0]


def mine(signum, frame):
    calls[0] += 1
    if calls[0] < 5 * sys.getrecursionlimit():
        signal.raise_signal(signal.SIGUSR1)  # another one, while the handler runs


signal.signal(signal.SIGUSR1, mine)
waiter = SignalWaiter(["USR1"])
closer = threading.Thread(target=waiter.close)  # (not the main thread: the handler stays)
closer.start()
closer.join()
try:
    signal.raise_signal(signal.SIGUSR1)
except RecursionError:
    print("RecursionError", calls[0])
else:
    print("handled", calls[0] == 5 * sys.getrecursionlimit())
"""


def test_a_signal_coming_while_the_handler_runs_does_not_nest_it() -> None:
    assert run_python(STORM, timeout=60) == "handled True"  # before: RecursionError
