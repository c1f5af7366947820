"""``ipcwire.terminate``: SIGTERM, wait, SIGKILL; reap our own children."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from multiprocessing.process import BaseProcess
from typing import Any, Final

from ipcwire._deadline import limit
from ipcwire._poll import wait_readable
from ipcwire.errors import ChannelBroken, Timeout
from ipcwire.signals._names import exit_status, send_signal, target_pid

__all__ = ["joined", "terminate"]

_KILL_WAIT: Final = 5.0  # after SIGKILL: only a process stuck in the kernel takes this long


def _exited(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for ``pid`` to exit (a pidfd where possible; never reaps)."""
    deadline = time.monotonic() + timeout
    fd = None
    opener = getattr(os, "pidfd_open", None)
    if opener is not None:
        try:
            fd = opener(pid)
        except ProcessLookupError:
            return True
        except OSError:
            fd = None
    try:
        while True:
            if _gone(pid):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if fd is not None:
                wait_readable(fd, left)
            else:  # pragma: no cover - no pidfd
                time.sleep(min(0.02, left))
    finally:
        if fd is not None:
            os.close(fd)


def _gone(pid: int) -> bool:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # not our child: ask the kernel whether it still exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return _zombie(pid)
    return info is not None


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 : raw.rfind(b")") + 3] in (b"Z", b"X")


def _reap(target: Any, pid: int) -> int | None:
    if isinstance(target, subprocess.Popen):
        return target.wait()
    if isinstance(target, BaseProcess):
        return joined(target)
    closer = getattr(target, "close", None)
    if closer is not None and hasattr(target, "returncode"):  # a spawn() channel
        closer()
        code = target.returncode
        return code if isinstance(code, int) else None
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None  # not our child: its parent reaps it
    return os.waitstatus_to_exitcode(status)


def joined(process: BaseProcess) -> int | None:
    """The exit status of a multiprocessing process that has exited, reaped by
    multiprocessing itself: a ``waitpid`` of ours would leave it saying ``is_alive()`` and
    ``exitcode is None`` for ever (and its ``terminate()`` signalling the freed pid)."""
    process.join()  # (it has exited: at once)
    return process.exitcode


def terminate(target: Any, timeout: float = 5.0, *, group: bool = False) -> int | None:
    """Stop a process: SIGTERM, then SIGKILL if it is still alive after ``timeout`` seconds.

    ``target``: a pid, a ``subprocess.Popen``, a ``multiprocessing.Process`` or a ``spawn()``
    channel; ``group``: signal its whole process group. Our own children are reaped (no
    zombie); the result is the exit status (negative: killed by that signal), or None for a
    process that is not our child. A process that is already gone is not an error.

    Raises:
        Timeout: the process survived SIGKILL for 5 s (stuck in the kernel).
        PermissionDenied: it belongs to another user.
        ConfigurationError: ``target`` is not a process.
    """
    pid = target_pid(target)
    limit(timeout, f"signal:{pid}")  # a NaN is refused before any signal is sent
    # Already waited for: its pid may be another process's by now (unless the group is meant:
    # a group's id is not reused while any of its members lives).
    if (group or exit_status(target) is None) and not _gone(pid):
        _signal(pid, signal.SIGTERM, group)
        if not _exited(pid, timeout):
            _signal(pid, signal.SIGKILL, group)
            if not _exited(pid, _KILL_WAIT):
                raise Timeout(
                    f"pid {pid} is still alive 5 s after SIGKILL (uninterruptible sleep in "
                    f"the kernel?); check /proc/{pid}/stack",
                    endpoint=f"signal:{pid}",
                )
    return _reap(target, pid)


def _signal(pid: int, sig: signal.Signals, group: bool) -> None:
    try:
        send_signal(pid, sig, group=group)
    except ChannelBroken:
        pass  # it exited in the meantime: that is what we wanted
