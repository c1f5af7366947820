"""stdio(exit_on_parent_death=True) in a child that runs in a pid namespace of its own
(``unshare --pid --fork``, bubblewrap): the spawn()ing process is not visible there (the
child's getppid() is 0, or its parent is the namespace's init), which is not a dead parent."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from ._util import PY, alive, py, wait_dead
from .test_spawn import ENV

AGENT = {
    "blocking": (
        "import os, threading, ipcwire\n"
        "ch = ipcwire.stdio(exit_on_parent_death=True)\n"
        # /proc is the host's (no --mount-proc): /proc/self names this process's host pid
        "msg = ch.recv(timeout=20)\n"
        "ch.send({'pong': msg, 'pid': os.getpid(), 'host': int(os.readlink('/proc/self'))})\n"
        # busy: it reads no more, so only the parent watch can tell it the spawner is gone
        "threading.Event().wait()\n"
    ),
    "asyncio": (
        "import asyncio, os\n"
        "from ipcwire.spawn.aio import stdio\n"
        "async def main():\n"
        "    ch = await stdio(exit_on_parent_death=True)\n"
        "    msg = await ch.recv(timeout=20)\n"
        "    await ch.send({'pong': msg, 'pid': os.getpid(),\n"
        "                   'host': int(os.readlink('/proc/self'))})\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    ),
}


def in_new_pid_namespace(code: str, *, as_init: bool) -> list[str]:
    """``code`` run by python in a new pid namespace: as its pid 1, or as pid 2 (a shell is
    pid 1 and starts it, as bubblewrap does)."""
    if as_init:
        return ["unshare", "--pid", "--fork", PY, "-c", code]
    return ["unshare", "--pid", "--fork", "sh", "-c", '"$0" -c "$1"; exit $?', PY, code]


@pytest.mark.parametrize(
    ("api", "as_init"), [("blocking", False), ("asyncio", False), ("blocking", True)]
)
def test_a_child_in_its_own_pid_namespace_watches_the_spawner(api: str, as_init: bool) -> None:
    """Before: as pid 2 it took the invisible spawner for dead and SIGTERMed itself inside
    stdio() (the request failed: 'the child exited with code 143'); as pid 1 the SIGTERM was
    ignored (init) and it ran with no watch at all, so kill -9 of the spawner left it and
    unshare running."""
    argv = in_new_pid_namespace(AGENT[api], as_init=as_init)
    orchestrator = f"""
        import threading, ipcwire
        ch = ipcwire.spawn({argv!r})
        reply = ch.request("ping", timeout=20)
        print(reply["pid"], reply["host"], ch.pid, flush=True)
        threading.Event().wait()
        """
    parent = subprocess.Popen(
        py(orchestrator), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None and parent.stderr is not None
    line = parent.stdout.readline().split()
    pids: list[int] = []
    try:
        assert len(line) == 3, parent.stderr.read()
        ns_pid, agent, launcher = map(int, line)
        pids = [agent, launcher]
        assert ns_pid == (1 if as_init else 2)
        assert alive(agent) and alive(launcher)
        parent.kill()
        parent.wait(10)
        assert wait_dead(agent, 10), "the agent outlived the process that spawned it"
        assert wait_dead(launcher, 10), "unshare outlived the process that spawned it"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.stdout.close()
        parent.stderr.close()
