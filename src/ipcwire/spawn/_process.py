"""Child processes: exit status in words, process-group bookkeeping, the shutdown ladder.

The ladder (blocking here; :mod:`ipcwire.spawn.aio` runs the same steps with ``await``):

1. the caller closes the child's stdin (the polite request to exit);
2. wait up to ``exit_timeout`` for the child to exit, reading and discarding its stdout so a
   child busy writing a last reply is not stuck on a full pipe;
3. SIGTERM the child's process group, wait up to ``term_timeout``;
4. SIGKILL the group, wait up to ``kill_timeout``;
5. reap the child.

"The group is gone" means the child has exited *and* no other live process remains in its
process group (a grandchild that inherited the pipes). The child is reaped only at the end, so
while the ladder runs its pid, and therefore the group id, cannot be reused by an unrelated
process. A process that left the group (``setsid``) escapes: use a cgroup or a container for
hostile children.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "ChildWatch",
    "LadderTimeouts",
    "describe_status",
    "group_members",
    "kill_group",
    "run_ladder",
]

log = logging.getLogger("ipcwire")

_PROC: Final = Path("/proc")
_HAS_PROC: Final = sys.platform.startswith("linux") and (_PROC / "self" / "stat").exists()
_SLICE: Final = 0.02  # polling step where no pidfd exists (macOS)


def describe_status(returncode: int) -> str:
    """``exited with code 3`` / ``was killed by signal SIGKILL (9)``."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name} ({-returncode})"


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd


class ChildWatch:
    """Knows whether the child exited, without reaping it (pidfd, or ``waitid(WNOWAIT)``)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pidfd = _pidfd(proc.pid)
        self._status: int | None = None

    def exited(self) -> bool:
        """True once the child has exited (it may still be an unreaped zombie)."""
        if self._status is not None or self.proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.proc.poll() is not None  # reaped elsewhere
        except OSError:
            return False
        if info is None:
            return False
        if info.si_code == os.CLD_EXITED:
            self._status = info.si_status
        else:
            self._status = -info.si_status
        return True

    @property
    def status(self) -> int | None:
        """The exit status (negative: killed by that signal), once exited."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        if self.exited():
            return self._status
        return None

    def wait_exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the child to exit (without reaping)."""
        deadline = time.monotonic() + timeout
        while not self.exited():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.pidfd is not None:
                select.select([self.pidfd], [], [], left)
            else:  # pragma: no cover - no pidfd
                time.sleep(min(_SLICE, left))
        return True

    def reap(self, timeout: float) -> int | None:
        """Reap the child; if it does not die in time, hand it to a background reaper."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning(
                "ipcwire: child pid %d did not die within %.1f s of SIGKILL (uninterruptible "
                "sleep?); it will be reaped in the background",
                self.pid,
                timeout,
            )
            threading.Thread(target=self.proc.wait, daemon=True, name="ipcwire reaper").start()
            return None

    def close(self) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None


def _stat_fields(pid: str) -> tuple[str, int] | None:
    try:
        raw = (_PROC / pid / "stat").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2 :].split()
    if len(rest) < 3:
        return None
    return rest[0].decode(), int(rest[2])  # state, pgrp


def group_members(pgid: int, *, exclude: int | None = None) -> list[int] | None:
    """Live (not zombie) processes in process group ``pgid``; None where /proc cannot say."""
    if not _HAS_PROC:
        return None
    found = []
    for entry in os.listdir(_PROC):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        fields = _stat_fields(entry)
        if fields is not None and fields[1] == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False if it is empty or not ours to signal."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class LadderTimeouts:
    """The waits of the shutdown ladder, in seconds."""

    __slots__ = ("exit", "kill", "term")

    def __init__(self, exit: float = 2.0, term: float = 2.0, kill: float = 2.0) -> None:
        for name, value in (("exit_timeout", exit), ("term_timeout", term)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, not {value}")
        self.exit = exit
        self.term = term
        self.kill = kill

    @property
    def bound(self) -> float:
        """The longest close() can take."""
        return self.exit + self.term + self.kill


class _Drain:
    """Reads and discards the child's stdout while the ladder waits."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self._buf = bytearray(65536)

    def fds(self) -> list[int]:
        return [] if self.fd is None else [self.fd]

    def pump(self, ready: Sequence[int]) -> None:
        if self.fd is None or self.fd not in ready:
            return
        try:
            n = os.readv(self.fd, (self._buf,))
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def _wait_group_gone(watch: ChildWatch, pgid: int, drain: _Drain, timeout: float) -> bool:
    """Wait until the child exited and its group holds no other live process."""
    deadline = time.monotonic() + timeout
    while True:
        if watch.exited():
            members = group_members(pgid, exclude=watch.pid)
            if members is None:  # pragma: no cover - no /proc: probe the group
                members = [pgid] if _group_alive_probe(pgid, watch) else []
            if not members:
                return True
        else:
            members = []
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        with _pidfds(members) as fds:
            if watch.pidfd is not None:
                waits = fds + drain.fds()
                if not watch.exited():
                    waits.append(watch.pidfd)
                # Re-scan now and then: a member may fork while we wait.
                ready, _, _ = select.select(waits, [], [], min(left, 0.5) if members else left)
            else:  # pragma: no cover - no pidfd: poll
                ready, _, _ = select.select(drain.fds(), [], [], min(_SLICE, left))
            drain.pump(ready)


@contextlib.contextmanager
def _pidfds(pids: list[int]) -> Iterator[list[int]]:
    fds = [fd for fd in (_pidfd(p) for p in pids) if fd is not None]
    try:
        yield fds
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _group_alive_probe(pgid: int, watch: ChildWatch) -> bool:  # pragma: no cover - non-Linux
    # Without /proc the unreaped leader keeps kill(-pgid, 0) succeeding; assume others remain
    # only if the leader is not the sole member we know of.
    return kill_group(pgid, 0) and not watch.exited()


def run_ladder(
    watch: ChildWatch,
    drain_fd: int | None,
    timeouts: LadderTimeouts,
) -> int | None:
    """Steps 2-5 of the ladder (the caller has closed stdin). Returns the child's exit status
    (None if it could not be reaped in time). Takes at most ``timeouts.bound`` seconds."""
    pgid = watch.pid  # the child leads its own group (process_group=0)
    drain = _Drain(drain_fd)
    try:
        if not _wait_group_gone(watch, pgid, drain, timeouts.exit):
            kill_group(pgid, signal.SIGTERM)
            if not _wait_group_gone(watch, pgid, drain, timeouts.term):
                log.info("ipcwire: child pid %d ignored SIGTERM; sending SIGKILL", watch.pid)
                kill_group(pgid, signal.SIGKILL)
                _wait_group_gone(watch, pgid, drain, timeouts.kill)
        return watch.reap(timeout=0.5 if watch.exited() else timeouts.kill)
    finally:
        drain.close()
        watch.close()
