"""spawn() and stdio(): a parent and its agent child in one file.

Run: python examples/spawn_agent.py   (the child is this same file with --child)
"""

from __future__ import annotations

import sys

import ipcwire


def child() -> None:
    ch = ipcwire.stdio()  # the protocol leaves fds 0/1; print() now goes to stderr
    print("agent starting (a stray print: it cannot corrupt the protocol)")
    for msg in ch:  # until the parent closes our stdin
        ch.send({"id": msg["id"], "result": sum(msg["args"])})


def parent() -> None:
    log: list[str] = []
    with ipcwire.spawn([sys.executable, __file__, "--child"], stderr=log.append) as agent:
        for i in range(3):
            reply = agent.request({"id": i, "args": [i, 10]}, timeout=10)
            print("reply:", reply)
        print("agent pid:", agent.pid)
    # Leaving the block ran the shutdown ladder: stdin closed, the agent exited, reaped.
    print("agent exit status:", agent.returncode)
    print("agent's stderr:", log)


if __name__ == "__main__":
    child() if "--child" in sys.argv else parent()
