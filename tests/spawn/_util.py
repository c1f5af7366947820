"""Helpers for the spawn tests: child programs, and checks that nothing is left behind."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

PY = sys.executable


def py(code: str) -> list[str]:
    """argv running ``code`` in a fresh interpreter."""
    return [PY, "-c", textwrap.dedent(code)]


def state(pid: int) -> str | None:
    """The process state letter from /proc (None: no such process)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()[0].decode()


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as dead)."""
    return state(pid) not in (None, "Z", "X")


def group(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def reaped(pid: int) -> bool:
    """True if ``pid`` is no child of ours any more (it was waited for), and not a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return state(pid) != "Z"
    return False


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    """Wait (on a pidfd, no sleeps) until ``pid`` has exited."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        select.select([fd], [], [], timeout)
        return not alive(pid)
    finally:
        os.close(fd)
