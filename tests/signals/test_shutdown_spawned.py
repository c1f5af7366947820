"""graceful_shutdown(*agents): the spawned children it closes share one shutdown ladder."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

from .test_signals import ENV

N = 4
AGENT = """
import os, sys
sys.stdin.buffer.read()  # the ladder closed our stdin
os.write({rep}, b"x")
os.read({go}, 1)  # then exit, once the test lets us go
"""
ORCHESTRATOR = {
    "blocking": """
import sys, threading, ipcwire
agents = [ipcwire.spawn([sys.executable, "-c", {agent!r}], pass_fds=[{go}, {rep}],
                        exit_timeout=60, term_timeout=60) for _ in range({n})]
with ipcwire.graceful_shutdown(*agents):
    print("ready", flush=True)
    threading.Event().wait()
""",
    "asyncio": """
import asyncio, sys
from ipcwire.signals.aio import graceful_shutdown
from ipcwire.spawn.aio import spawn
async def main():
    agents = [await spawn([sys.executable, "-c", {agent!r}], pass_fds=[{go}, {rep}],
                          exit_timeout=60, term_timeout=60) for _ in range({n})]
    graceful_shutdown(*agents)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
""",
}


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_graceful_shutdown_closes_spawned_children_together(api: str) -> None:
    """It closed them one after another, each with its whole ladder: 20 agents that ignore
    the end of their input and SIGTERM kept an orchestrator over a minute in its shutdown
    (4 s each), where close_all(), or the exit of a program that closes nothing, takes one
    ladder. Here each agent waits after the end of its stdin: one after another, the second
    agent would not see its end of input before the first's exit_timeout (60 s)."""
    go_r, go_w = os.pipe()
    rep_r, rep_w = os.pipe()
    agent = textwrap.dedent(AGENT).format(go=go_r, rep=rep_w)
    code = ORCHESTRATOR[api].format(agent=agent, go=go_r, rep=rep_w, n=N)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, pass_fds=[go_r, rep_w]
    )
    os.close(go_r)
    os.close(rep_w)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        seen = b""
        while len(seen) < N:
            assert select.select([rep_r], [], [], 10)[0], f"{len(seen)} of {N} saw their EOF"
            seen += os.read(rep_r, N)
        os.close(go_w)  # let them go
        go_w = -1
        assert proc.wait(30) == 0
    finally:
        if go_w >= 0:
            os.close(go_w)
        os.close(rep_r)
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
