"""A private D-Bus session bus for a benchmark run on a machine that has none.

A fresh machine, a container or an SSH session usually has ``dbus-daemon`` installed but no
session bus running, so the D-Bus rows would only be a note. When the run includes D-Bus and
no bus is reachable, the bench starts its own ``dbus-daemon --session`` on a private socket
for the length of the run (the workers inherit its address) and stops it afterwards; the
report says so. A bus that is already there is always used as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Final

__all__ = ["session_bus_for_run"]

_ENV: Final = "DBUS_SESSION_BUS_ADDRESS"
_PR_SET_PDEATHSIG: Final = 1
_SUN_PATH_MAX: Final = 99  # dbus-daemon refuses longer socket paths ("Socket name too long")


def _bus_reachable() -> bool:
    if os.environ.get(_ENV):
        return True
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return runtime is not None and os.path.exists(os.path.join(runtime, "bus"))


def _die_with_parent() -> Callable[[], None] | None:
    """What the daemon runs before exec: ask for SIGTERM when the bench dies, even by kill -9
    (Linux's PR_SET_PDEATHSIG; elsewhere None, and the bench's own clean-up is all there is).
    The C function is looked up here, in the parent: after fork only the call happens."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return functools.partial(prctl, _PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


@contextlib.contextmanager
def session_bus_for_run(wanted: bool, notes: list[str]) -> Iterator[str | None]:
    """Yield the address of a private session bus started for the run, or None when none was
    needed (``wanted`` false, a bus is reachable) or none could be started (a note says why).
    """
    if not wanted or _bus_reachable():
        yield None
        return
    exe = shutil.which("dbus-daemon")
    if exe is None:
        notes.append(
            "dbus: no session bus and no dbus-daemon to start one (install Debian's dbus "
            "package, or run the bench under `dbus-run-session --`)"
        )
        yield None
        return
    workdir = tempfile.mkdtemp(prefix="ipcwire-bench-bus-")
    if len(os.fsencode(workdir)) + len("/bus") > _SUN_PATH_MAX:
        # a long $TMPDIR (a test runner's, a CI job's): the socket's path would not fit in a
        # sockaddr_un as dbus-daemon counts, and it could not listen ("did not start (exit 1)")
        os.rmdir(workdir)
        workdir = tempfile.mkdtemp(prefix="ipcwire-bench-bus-", dir="/tmp")
    # (a file, not a pipe: a pipe nobody reads could fill and stall the daemon; closed below)
    errors = tempfile.TemporaryFile()  # noqa: SIM115
    proc = subprocess.Popen(
        [exe, "--session", "--nofork", "--print-address=1", f"--address=unix:path={workdir}/bus"],
        stdout=subprocess.PIPE,
        stderr=errors,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=_die_with_parent(),  # noqa: PLW1509 (one prctl call, looked up before fork)
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()  # printed once it listens
        if not address:
            code = proc.wait(10)
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines()
            notes.append(
                f"dbus: a private session bus did not start (exit {code}"
                + (f": {said[-1]}" if said else "")
                + ")"
            )
            yield None
            return
        notes.append(
            "dbus: no session bus was running, so the bench started a private "
            "`dbus-daemon --session` for this run and stopped it afterwards"
        )
        os.environ[_ENV] = address
        try:
            yield address
        finally:
            os.environ.pop(_ENV, None)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        errors.close()
        shutil.rmtree(workdir, ignore_errors=True)
