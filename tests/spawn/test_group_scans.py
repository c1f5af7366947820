"""Passes over /proc are shared by the ladders that can use them, and never used by one that
cannot.

Each ladder step asks which processes are left in the child's group, and a pass over /proc
reads every process's stat. 400 asyncio agents closing at once made 400 passes per step (a
1.25 s stall of the event loop; 4.5 s for 800), and 300 blocking requests that timed out,
300 threads of passes (7.8 s to shut down what takes 2.5 s), as helper-87 measured. A pass
must have begun after the ladder saw its child exit: an older one may predate a grandchild
the child started, and call the group empty while the grandchild runs.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import pytest

from ipcwire.spawn import _process, aio


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The moments passes over /proc were made (the real pass, counted)."""
    made: list[float] = []
    real = _process._scan

    def counted() -> dict[int, list[int]]:
        made.append(time.monotonic())
        return real()

    monkeypatch.setattr(_process, "_scan", counted)
    monkeypatch.setattr(_process, "_scans", _process._GroupScans())
    yield made


def _groups(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` process groups, each a shell and its sleep (running when this returns)."""
    leaders = [
        subprocess.Popen(
            ["sh", "-c", "sleep 30 & echo $!; wait"], process_group=0, stdout=subprocess.PIPE
        )
        for _ in range(n)
    ]
    for p in leaders:
        assert p.stdout is not None and p.stdout.readline().strip().isdigit()
    return leaders


def test_threads_that_looked_before_a_pass_share_it(passes: list[float]) -> None:
    leaders = _groups(3)
    try:
        looked = time.monotonic()
        for _ in range(100):
            for p in leaders:
                found = _process.members_of([p.pid], looked)
                assert found is not None and len(found[p.pid]) == 1  # its sleep
        assert len(passes) == 1
    finally:
        for p in leaders:
            _process.kill_group(p.pid, 9)
            p.wait()


def test_a_pass_from_before_the_look_is_not_used(passes: list[float]) -> None:
    """The group empty in an earlier pass has a member now: a ladder that looked after it
    gets a new pass, which finds the member."""
    leader = subprocess.Popen(
        ["sh", "-c", "read x; sleep 30 & echo $!; wait"],
        process_group=0,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        found = _process.members_of([leader.pid], time.monotonic())
        assert found == {leader.pid: []}
        assert leader.stdin is not None and leader.stdout is not None
        leader.stdin.write(b"go\n")
        leader.stdin.flush()
        member = int(leader.stdout.readline())
        assert _process.members_of([leader.pid], time.monotonic()) == {leader.pid: [member]}
        assert len(passes) == 2
    finally:
        _process.kill_group(leader.pid, 9)
        leader.wait()


def test_asyncio_ladders_asking_in_one_iteration_share_one_pass(passes: list[float]) -> None:
    leaders = _groups(20)

    async def main() -> list[list[int] | None]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(aio._group_members(loop, p.pid) for p in leaders))

    try:
        found = asyncio.run(main())
        assert all(f is not None and len(f) == 1 for f in found)
        assert len(passes) == 1
    finally:
        for p in leaders:
            _process.kill_group(p.pid, 9)
            p.wait()
