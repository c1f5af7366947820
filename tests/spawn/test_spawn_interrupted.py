"""spawn() interrupted (Ctrl-C, or graceful_shutdown's SystemExit) after the fork, before its
channel existed, left the child running: nothing would ever shut it down."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from ._util import alive, py
from .test_spawn import ENV

# The orchestrator makes KeyboardInterrupt happen at one point inside spawn() (a trace
# function raising is an exception at that very bytecode, as a signal handler's would be).
ORCHESTRATOR = """
import logging, sys, ipcwire
point, marker = sys.argv[1], sys.argv[2]
point, _, nth = point.partition("#")  # the nth call (1st by default)
name, _, event = point.partition(":")
seen = [0]

def tracer(frame, ev, arg):
    if frame.f_code.co_qualname == name and ev == (event or "call"):
        seen[0] += 1
        if seen[0] == int(nth or 1):
            sys.settrace(None)
            raise KeyboardInterrupt(point)
    return tracer if event == "return" and frame.f_code.co_qualname == name else None

sys.settrace(tracer)
try:
    ch = ipcwire.spawn([sys.executable, "-c", "import time; time.sleep(60)", marker],
                       stderr=logging.getLogger("agents"))
except KeyboardInterrupt:
    print("interrupted", flush=True)
else:
    print("not interrupted", flush=True)
"""


def running_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found


@pytest.mark.parametrize(
    "point",
    [
        # Forked and exec'd, Popen not returned yet. A handler could raise here, and even as
        # the fork returned (so the pid was lost: 1 orchestrator in 40 interrupted at random
        # left an agent running). The start now runs in a thread of its own, where Python
        # runs no signal handler: a trace function in the main thread does not reach it.
        "Popen._execute_child:return",
        "Event.wait",  # in Thread.start(): the thread runs, start() has not returned
        "Event.wait#2",  # the main thread waits for that thread's start
        "ChildWatch.__init__",
        "StderrPump.__init__",
        "FdStream.__init__",
        "SpawnChannel.__init__",
    ],
)
def test_an_interrupted_spawn_leaves_no_child_running(point: str) -> None:
    marker = f"ipcwire-test-{uuid.uuid4().hex}"
    try:
        out = subprocess.run(
            py(ORCHESTRATOR) + [point, marker],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        if point != "Popen._execute_child:return":
            assert out.stdout.strip() == "interrupted", out.stderr
        assert running_with(marker) == [], "the child outlived the interrupted spawn()"
    finally:
        for pid in running_with(marker):
            os.kill(pid, signal.SIGKILL)
