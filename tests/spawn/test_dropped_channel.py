"""A spawn channel dropped without close() is shut down when it is collected.

Before, the module kept every open channel in a strong set (for the shutdown at exit): a
dropped one was never collected, so a long-lived parent kept its child running (or a zombie)
and its pipes and pidfd open until it exited. Now the set is weak and the collected channel
closes the child's stdin, and a background thread runs the rest of the ladder and reaps it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable

from tests._proc import wait_until

import ipcwire
from ipcwire import aio

from ._util import py, reaped, state, wait_dead
from .test_spawn_exit import SRC

ECHO = py("import ipcwire; ch = ipcwire.stdio(); [ch.send(m) for m in ch]")
EXITS = py("pass")


def fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def wait_reaped(pids: list[int], timeout: float = 10.0) -> bool:
    """Wait until every pid has exited (on pidfds), then, bounded, until it was reaped by the
    ladder's thread (nothing to wait on for that: a short poll of the condition)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        if not wait_dead(pid, max(0.0, deadline - time.monotonic())):
            return False
    return poll_until(lambda: all(reaped(pid) for pid in pids), deadline)


def fds_back(before: set[int], timeout: float = 5.0) -> set[int]:
    """The fds opened since ``before`` still open once the ladder's thread is done with them
    (it closes them a moment after it reaped the child: a short poll of the condition)."""
    poll_until(lambda: not fds() - before, time.monotonic() + timeout)
    return fds() - before


def poll_until(condition: Callable[[], bool], deadline: float) -> bool:
    """``condition`` polled until ``deadline`` (``time.monotonic()``)."""
    return wait_until(condition, max(0.0, deadline - time.monotonic()))


def test_a_dropped_blocking_channel_shuts_its_child_down() -> None:
    before = fds()
    pids = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for argv in (ECHO, EXITS):
            ch = ipcwire.spawn(argv)
            if argv is ECHO:
                assert ch.request({"i": 1}, timeout=10) == {"i": 1}
            else:
                assert ch.wait(timeout=10) == 0
            pids.append(ch.pid)
            del ch  # a forgotten close()
        gc.collect()
    assert wait_reaped(pids), [state(pid) for pid in pids]
    assert fds_back(before) == set()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(messages) == 2 and all("unclosed spawn channel" in m for m in messages), messages


def test_a_dropped_asyncio_channel_shuts_its_child_down() -> None:
    async def main() -> tuple[list[int], list[int]]:
        exited = await aio.spawn(EXITS)
        assert await exited.wait(timeout=10) == 0
        echo = await aio.spawn(ECHO)
        assert await echo.request({"i": 1}, timeout=10) == {"i": 1}
        first, second = [exited.pid], [echo.pid]
        del exited, echo
        gc.collect()
        # a child that exited: its channel is collected while the loop runs
        assert await asyncio.to_thread(wait_reaped, first), state(first[0])
        return first, second

    before = fds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        _, alive = asyncio.run(main())
        # one still running: the loop's reader on its stdout held the channel until now
        gc.collect()
    assert wait_reaped(alive), state(alive[0])
    assert fds_back(before) == set()


def test_the_exit_finishes_the_ladder_of_a_dropped_channel(tmp_path: object) -> None:
    """A parent that drops a channel to a child ignoring the end of stdin and exits at once:
    the exit waits for the dropped channel's ladder (SIGTERM ends the child)."""
    script = textwrap.dedent(
        """
        import gc, sys, ipcwire
        ch = ipcwire.spawn(
            [sys.executable, "-c", "import sys, time; print('{}', flush=True); time.sleep(60)"],
            exit_timeout=0.2, term_timeout=0.5,
        )
        ch.recv(timeout=10)
        print(ch.pid, flush=True)
        del ch
        gc.collect()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    pid = int(out.stdout.split()[-1])
    assert state(pid) in (None, "Z", "X"), f"child {pid} outlived its parent"
