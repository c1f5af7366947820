"""Signals: notifications between processes, and an orderly shutdown (``signal:``).

* :func:`send_signal` / ``ipcwire.connect("signal:PID")``: send a named signal to a process
  or a process group.
* :class:`SignalWaiter` / ``ipcwire.listen("signal:USR1,HUP")``: wait for signals safely
  (the wakeup fd and a dispatcher thread; handlers only keep default actions from happening).
* :func:`graceful_shutdown`: SIGTERM/SIGINT run your cleanup once, close channels and
  listeners, remove socket files, then exit.
* :func:`terminate`: SIGTERM, then SIGKILL after a timeout; our children are reaped.

asyncio: :mod:`ipcwire.signals.aio`.
"""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec

SPEC = MechanismSpec(
    scheme="signal",
    title="Signals",
    summary="POSIX signals as payload-less notifications to a pid or process group; "
    "graceful shutdown",
    capabilities=Capabilities(
        bidirectional=False,
        reliable=False,  # standard signals coalesce: two before delivery arrive once
        ordered=False,
        message_boundaries=True,
        max_message_size=0,  # the signal is the message; there is no payload
        multi_client=False,
        platforms=("linux", "darwin", "freebsd"),
    ),
    blocking="ipcwire.signals.blocking",
    aio="ipcwire.signals.aio",
    docs="docs/mechanisms/signals.md",
    example_url="signal:1234",
)

# The public helpers (after SPEC, so the registry can import this module cheaply).
from ipcwire.signals._names import parse_signal, send_signal  # noqa: E402
from ipcwire.signals._shutdown import GracefulShutdown, graceful_shutdown  # noqa: E402
from ipcwire.signals._terminate import terminate  # noqa: E402
from ipcwire.signals._waiter import SignalSender, SignalWaiter  # noqa: E402

__all__ = [
    "SPEC",
    "GracefulShutdown",
    "SignalSender",
    "SignalWaiter",
    "graceful_shutdown",
    "parse_signal",
    "send_signal",
    "terminate",
]
