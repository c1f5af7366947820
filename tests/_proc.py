"""Child processes for tests: start Python code, wait for its "ready" line (no sleeps)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

NOBODY = 65534


def python(
    code: str, *, as_nobody: bool = False, as_uid: int | None = None
) -> subprocess.Popen[str]:
    """Run ``code`` in a fresh interpreter with pipes on stdin/stdout/stderr; as uid nobody,
    or as ``as_uid`` (a uid of the test's own: per-user limits and directories, such as
    RLIMIT_MSGQUEUE's byte count or /tmp/ipcwire-UID, are then not shared with the tests of
    the other pytest worker)."""
    prologue = ""
    uid = NOBODY if as_nobody else as_uid
    if uid is not None:
        # Import first (the interpreter lives under /root), then drop to that uid.
        prologue = (
            "import os, ipcwire, ipcwire.unix.blocking, ipcwire.tcp.blocking\n"
            "ipcwire.mechanisms()\n"
            f"os.setgroups([])\nos.setgid({uid})\nos.setuid({uid})\n"
        )
    return subprocess.Popen(
        [sys.executable, "-c", prologue + textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The child's next stdout line (it prints one when ready)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=timeout)
        raise AssertionError(f"child exited ({proc.returncode}) before answering: {err}")
    return line.strip()


# Code for a child interpreter (prepend it to the child's own): ``at_fd_room(room, attempt)``
# calls ``attempt()`` with room for exactly ``room`` more descriptors and returns what it
# returned ("ok"), the ipcwire error it raised, or "UNTYPED <repr>" for any other exception;
# and how many descriptors it left open.
FD_ROOM = """
import os, resource


def at_fd_room(room, attempt):
    def nfd():
        return len(os.listdir("/proc/self/fd"))

    # fill the holes below the highest descriptor, so that exactly `room` more fit
    hi = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    fill = []
    while (fd := os.open("/dev/null", os.O_RDONLY)) <= hi:
        fill.append(fd)
    os.close(fd)
    before = nfd() - len(fill)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hi + 1 + room, hard))
    try:
        result = attempt()
    except ipcwire.IpcwireError as exc:
        result = exc
    except Exception as exc:
        result = "UNTYPED " + repr(exc)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fill:
            os.close(fd)
    return result, nfd() - before
"""


def run_python(
    code: str, *, as_nobody: bool = False, as_uid: int | None = None, timeout: float = 30.0
) -> str:
    """Run ``code`` to completion; return its stdout (fail with its stderr on error)."""
    proc = python(code, as_nobody=as_nobody, as_uid=as_uid)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}): {err}"
    return out.strip()


@contextmanager
def child(code: str) -> Iterator[subprocess.Popen[str]]:
    """A child that prints a ready line; killed (-9) and reaped on exit."""
    proc = python(code)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)


def kill9(proc: subprocess.Popen[str]) -> None:
    """kill -9 and reap."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)


def wait_until(cond: object, timeout: float = 10.0) -> bool:
    """Poll a condition with a deadline (for state the OS only shows by polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def open_fds() -> set[str]:
    """This process's open descriptors, each as "N target" (what /proc/self/fd says), so that
    a number reused for something else does not pass for the one that was closed."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add(f"{fd} {os.readlink(f'/proc/self/fd/{fd}')}")
        except FileNotFoundError:
            continue  # the listing's own
    return fds


def exited_within(proc: subprocess.Popen[str], seconds: float) -> int:
    """``proc``'s exit code once it ends, within ``seconds``; else it is killed (-9 then)."""
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        pass  # the caller's assertion says it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode
