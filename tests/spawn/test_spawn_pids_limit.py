"""spawn() refused by a limit on processes (a pids cgroup's pids.max, a container's
--pids-limit) raises ResourceExhausted naming that limit (its pids.max file and value) and
ulimit -u, on both APIs, and leaves no child behind. Before, it said only "cannot start ...:
Resource temporarily unavailable (out of processes or memory?)". The limit is real: the
spawning process runs in a pids cgroup whose pids.max the test sets to what it holds.
"""

from __future__ import annotations

from tests._proc import child, wait_line
from tests.shm._pids import thread_limit

SPAWN = """
import asyncio, sys, ipcwire
from ipcwire import aio

print("ready", flush=True)
sys.stdin.readline()

def blocking():
    with ipcwire.spawn(["true"]):
        pass

async def asyncio_():
    async with await aio.spawn(["true"]):
        pass

for name, attempt in (("blocking", blocking), ("asyncio", lambda: asyncio.run(asyncio_()))):
    try:
        attempt()
        print(name, "started")
    except Exception as exc:
        print(name, type(exc).__name__, exc)
print("done", flush=True)
"""


def test_spawn_at_the_pids_limit_names_it() -> None:
    with thread_limit() as limit, child(SPAWN) as proc:
        assert wait_line(proc) == "ready"
        limit.add(proc.pid)
        held = limit.hold()
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        lines = [wait_line(proc) for _ in range(3)]
        assert lines[2] == "done", lines
        for line in lines[:2]:
            assert " ResourceExhausted cannot start " in line, line
            assert f"the cgroup's pids.max is 0 ({limit.path}/pids.max" in line, line
            assert "ulimit -u (RLIMIT_NPROC)" in line, line
        assert int((limit.path / "pids.current").read_text()) == held  # no child left
