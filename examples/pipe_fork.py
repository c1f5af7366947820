"""Anonymous pipes across fork: os.fork(), or multiprocessing with the fork start method.

A forked child inherits both ends. Each process closes the end it does not use: the child
the parent's, the parent the child's. Otherwise the child still holds a copy of the
parent's write end, so its loop never sees end of stream and it never exits. Closed that
way, pipe.ends() behaves like multiprocessing.Pipe().

Run: python examples/pipe_fork.py
"""

from __future__ import annotations

import multiprocessing as mp
import os

from ipcwire import pipe
from ipcwire.pipe import PipeEnd


def serve(end: PipeEnd) -> None:
    with end.open(codec="json") as ch:
        for msg in ch:  # until every copy of the parent's end is closed
            ch.send({"sum": sum(msg["args"])})


def child(end: PipeEnd, parents_end: PipeEnd) -> None:
    parents_end.close()  # inherited by fork: close it here, or EOF never comes
    serve(end)


def with_os_fork() -> None:
    parent_end, child_end = pipe.ends()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            child(child_end, parent_end)
            code = 0
        finally:
            os._exit(code)  # (never run the parent's code on the way out)
    child_end.close()  # the parent closes the child's end
    with parent_end.open(codec="json") as ch:
        print("os.fork:", ch.request({"args": [1, 2, 3]}, timeout=10))
    _, status = os.waitpid(pid, 0)  # the child saw EOF when we closed: it has exited
    print("os.fork: child exit status", os.waitstatus_to_exitcode(status))


def with_multiprocessing() -> None:
    parent_end, child_end = pipe.ends()
    proc = mp.get_context("fork").Process(target=child, args=(child_end, parent_end))
    proc.start()
    child_end.close()
    with parent_end.open(codec="json") as ch:
        print("multiprocessing (fork):", ch.request({"args": [4, 5]}, timeout=10))
    proc.join(10)
    print("multiprocessing (fork): child exit code", proc.exitcode)


if __name__ == "__main__":
    with_os_fork()
    with_multiprocessing()
