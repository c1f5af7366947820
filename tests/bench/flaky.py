"""A contender whose mechanism goes away part-way, for the runner's tests: its side A works
``options["works"]`` times in a run, then raises MechanismUnavailable (as a daemon that died
would). Imported by the worker processes (the contender is pickled by reference)."""

from __future__ import annotations

import os
from typing import Any

from ipcwire.bench.builtin.raw import unix_side_a, unix_side_b
from ipcwire.bench.contender import Contender, Task
from ipcwire.errors import MechanismUnavailable


def flaky_side_a(task: Task, shared: Any) -> Any:
    counter = os.path.join(task.workdir, f"{task.contender.id.replace('/', '-')}.count")
    try:
        with open(counter) as f:
            n = int(f.read())
    except FileNotFoundError:
        n = 0
    with open(counter, "w") as f:
        f.write(str(n + 1))
    if n >= task.contender.options["works"]:
        raise MechanismUnavailable("test: the daemon went away")
    return unix_side_a(task, shared)


def flaky(works: int) -> Contender:
    return Contender(
        id=f"test/flaky-{works}",
        title=f"works {works} times",
        group="peer",
        mechanism="unix",
        api="blocking",
        side_a=flaky_side_a,
        side_b=unix_side_b,
        baseline="raw/unix",
        options={"works": works},
    )
