"""Out of descriptors while spawning: ResourceExhausted naming the limit and the fix, on both
APIs. The asyncio spawn said only "Too many open files (out of processes, memory or file
descriptors?)" (helper-87's scale walkthrough, agent 338 at ulimit -n 1024)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import asyncio, resource, sys, ipcwire
from ipcwire import aio
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
argv = [sys.executable, "-c", "import sys; sys.stdin.read()"]
agents = []

async def main():
    while True:
        agents.append(await aio.spawn(argv) if sys.argv[1] == "asyncio" else ipcwire.spawn(argv))

try:
    asyncio.run(main())
except ipcwire.ResourceExhausted as exc:
    print(exc)
for a in agents:
    a.close()
"""


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_spawning_past_the_descriptor_limit_names_it(api: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), api],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "out of file descriptors" in out.stdout and "ulimit -n" in out.stdout, out.stdout
