"""A real limit of processes/threads for a child process: a pids cgroup, made and removed by
the test. (RLIMIT_NPROC does not apply to root, so a cgroup's ``pids.max`` is what the tests,
which run as root, can really hit: the child's ``pthread_create`` then fails with EAGAIN and
Python's ``Thread.start()`` raises ``RuntimeError: can't start new thread``.)

Used by the shm, ws and grpc listener tests.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

_V1 = Path("/sys/fs/cgroup/pids")
_V2 = Path("/sys/fs/cgroup")
_counter = itertools.count()


def _base() -> Path:
    """Where a pids cgroup can be made: the v1 pids hierarchy, or a v2 root whose
    ``pids`` controller is enabled for its children."""
    if (_V1 / "cgroup.procs").exists():
        return _V1
    ctl = _V2 / "cgroup.subtree_control"
    if ctl.exists() and "pids" in ctl.read_text().split():
        return _V2
    raise AssertionError(
        "no pids cgroup can be made here (neither /sys/fs/cgroup/pids nor a cgroup2 root "
        "with the pids controller): these tests need one to put a real thread limit on a "
        "child process"
    )


class ThreadLimit:
    """A pids cgroup holding one child process: ``hold()`` lets it start no more threads
    (``pids.max`` set to what it has now), ``lift()`` removes the limit."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, pid: int) -> None:
        """Move ``pid`` with all its threads into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def hold(self, more: int = 0) -> int:
        """No new thread or process in the cgroup from now on (but ``more``); returns how
        many it holds. Without ``more`` the limit is 0, not what it holds now: a thread that
        ends later (grpcio starts and stops its own) would free room for the very thread the
        test expects refused (the controller lets a limit sit below the count it has)."""
        current = int((self.path / "pids.current").read_text())
        (self.path / "pids.max").write_text(str(current + more if more else 0))
        return current

    def lift(self) -> None:
        (self.path / "pids.max").write_text("max")


@contextlib.contextmanager
def thread_limit() -> Iterator[ThreadLimit]:
    """A fresh pids cgroup; removed on exit (kill and reap its processes before leaving)."""
    path = _base() / f"ipcwire-test-{os.getpid()}-{next(_counter)}"
    path.mkdir()
    try:
        yield ThreadLimit(path)
    finally:
        with contextlib.suppress(OSError):
            (path / "pids.max").write_text("max")
        path.rmdir()
