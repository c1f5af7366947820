"""IPCWIRE_PARENT_PID is meant for the process spawn() started (or the program a launcher
runs for it), not for the processes that one starts with plain subprocess pipes."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess

import pytest

from ipcwire.spawn import spawn

from ._util import alive, py, wait_dead
from .test_spawn import ENV

GRANDCHILD = {
    "blocking": (
        "import threading, ipcwire\n"
        "ch = ipcwire.stdio(exit_on_parent_death=True)\n"
        "ch.send('watching')\n"
        "threading.Event().wait()\n"
    ),
    "asyncio": (
        "import asyncio\n"
        "from ipcwire.spawn.aio import stdio\n"
        "async def main():\n"
        "    ch = await stdio(exit_on_parent_death=True)\n"
        "    await ch.send('watching')\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    ),
}


def agent(grandchild: str, *, report_fd: int = 1, after_stdin_ends: bool = False) -> list[str]:
    """An agent that does not use ipcwire: it starts a grandchild with plain subprocess pipes
    and writes the grandchild's pid and first line to ``report_fd`` (1: the spawn channel)."""
    return py(
        f"""
        import json, os, subprocess, sys, threading
        if {after_stdin_ends!r}:
            sys.stdin.buffer.read()  # until the spawner is gone
        g = subprocess.Popen([sys.executable, "-c", {grandchild!r}],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        said = g.stdout.readline().decode().strip()
        os.write({report_fd}, (json.dumps({{"pid": g.pid, "said": said}}) + "\\n").encode())
        threading.Event().wait()
        """
    )


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_grandchild_watches_its_own_parent_not_the_spawner(api: str) -> None:
    """A grandchild that an agent started with plain pipes inherited IPCWIRE_PARENT_PID and
    watched the orchestrator: when the agent was killed with -9, the grandchild lived on
    (until the orchestrator's own end)."""
    with spawn(agent(GRANDCHILD[api]), env=ENV, codec="json") as ch:
        got = ch.recv(timeout=20)
        assert got["said"] == '"watching"', got
        grandchild = got["pid"]
        try:
            os.kill(ch.pid, signal.SIGKILL)
            assert wait_dead(grandchild, 10), "the grandchild outlived its parent"
        finally:
            if alive(grandchild):
                os.kill(grandchild, signal.SIGKILL)


def test_a_grandchild_of_a_spawner_gone_already_does_not_end_itself() -> None:
    """The spawner exits, its agent lives on and then starts a grandchild: the grandchild took
    the spawner's pid for its parent's, found it dead, and SIGTERMed itself inside stdio()
    although its own parent was alive."""
    r, w = os.pipe()
    late_agent = agent(GRANDCHILD["blocking"], report_fd=w, after_stdin_ends=True)
    spawner = f"""
        import os, ipcwire
        ch = ipcwire.spawn({late_agent!r}, pass_fds=[{w}])
        print(ch.pid, flush=True)
        os._exit(0)  # gone without closing: the agent lives on
        """
    try:
        proc = subprocess.Popen(py(spawner), env=ENV, stdout=subprocess.PIPE, pass_fds=[w])
        os.close(w)
        w = -1
        assert proc.stdout is not None
        with proc.stdout:
            agent_pid = int(proc.stdout.readline())
        assert proc.wait(20) == 0
        try:
            assert select.select([r], [], [], 20)[0], "no report from the agent"
            got = json.loads(os.read(r, 4096))
            assert got["said"] == '"watching"', got  # "": it ended itself
            assert alive(got["pid"])
        finally:
            os.kill(agent_pid, signal.SIGKILL)
            wait_dead(agent_pid, 10)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
