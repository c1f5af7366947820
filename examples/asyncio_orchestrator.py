"""An asyncio orchestrator: three spawned agents, talked to at once, one of them failing.

Run: python examples/asyncio_orchestrator.py   (each agent is this same file with --agent NAME)

The agents speak JSON lines over their stdin/stdout (``aio.spawn``'s default). The parent asks
all three at once in a TaskGroup, each request with a timeout, and prints each reply as it
comes. In the second round the agent "beta" exits with status 3 instead of answering: its
request raises ChannelBroken naming that status, and the other agents are not disturbed.
Then all the agents are shut down together. See docs/asyncio.md.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import ipcwire
from ipcwire import aio
from ipcwire.spawn.aio import AioSpawnChannel

NAMES = ["alpha", "beta", "gamma"]


# -- the agent (a child process) ---------------------------------------------------------
async def agent(name: str) -> None:
    ch = await aio.stdio()  # the protocol leaves fds 0/1; print() now goes to stderr
    print(f"{name} ready")
    async for msg in ch:  # ends when the parent closes our stdin
        if msg.get("fail") == name:
            print(f"{name}: failing on purpose, exit status 3")
            sys.exit(3)
        await asyncio.sleep(msg["work"])  # stands for real work
        await ch.send({"agent": name, "round": msg["round"], "result": msg["x"] * 2})
    print(f"{name}: parent closed my stdin, exiting")


# -- the orchestrator ----------------------------------------------------------------------
async def ask(name: str, ch: aio.AioChannel, msg: dict[str, Any]) -> None:
    """One agent's request; a failed agent is reported here, so the others go on."""
    try:
        reply = await ch.request(msg, timeout=10)
    except ipcwire.ChannelBroken as exc:
        print(f"  {name} failed: ChannelBroken: {exc}")
    except ipcwire.Timeout as exc:
        print(f"  {name} did not answer: {exc}")
    else:
        print(f"  {name} answered: {reply}")


async def orchestrate() -> None:
    agents: dict[str, AioSpawnChannel] = {}
    try:
        for name in NAMES:
            agents[name] = await aio.spawn(
                [sys.executable, __file__, "--agent", name],
                stderr=lambda line: print(f"  [agent stderr] {line}"),  # called in the loop
            )
        for rnd, fail in ((1, None), (2, "beta")):
            told = f" ({fail} is told to fail)" if fail else ""
            print(f"round {rnd}: asking {', '.join(agents)} at once{told}")
            async with asyncio.TaskGroup() as tg:  # ends when every ask() has
                for i, (name, ch) in enumerate(agents.items()):
                    work = 0.1 * (len(agents) - i)  # alpha works longest: gamma answers first
                    msg = {"round": rnd, "x": 10 * rnd + i, "work": work, "fail": fail}
                    tg.create_task(ask(name, ch, msg))
    finally:
        # Every shutdown ladder at once: stdin closed; SIGTERM, then SIGKILL, only if needed.
        await asyncio.gather(*(ch.aclose() for ch in agents.values()))
    for name, ch in agents.items():
        print(f"{name}: exit status {ch.returncode}")


if __name__ == "__main__":
    if "--agent" in sys.argv:
        asyncio.run(agent(sys.argv[sys.argv.index("--agent") + 1]))
    else:
        asyncio.run(orchestrate())
