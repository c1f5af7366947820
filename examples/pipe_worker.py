"""Anonymous pipes to a subprocess: the parent hands one end over with pass_fds.

Run: python examples/pipe_worker.py   (the worker is this same file with a pipe: URL)
"""

from __future__ import annotations

import subprocess
import sys

import ipcwire
from ipcwire import pipe


def worker(url: str) -> None:
    with ipcwire.connect(url) as ch:  # pipe:?rfd=..&wfd=..&codec=json
        for msg in ch:
            ch.send({"sum": sum(msg["args"])})


def parent() -> None:
    parent_end, child_end = pipe.ends()  # two pipes, close-on-exec
    proc = subprocess.Popen(
        [sys.executable, __file__, child_end.url_with(codec="json")], pass_fds=child_end.fds
    )
    child_end.close()  # our copy of the child's end: close it, or EOF never comes
    with parent_end.open(codec="json") as ch:
        for args in ([1, 2], [3, 4, 5]):
            print(args, "->", ch.request({"args": args}, timeout=10))
    print("worker exit status:", proc.wait(timeout=10))


if __name__ == "__main__":
    worker(sys.argv[1]) if len(sys.argv) > 1 else parent()
