"""Private D-Bus session daemons for the tests: one for the whole session, and one a test may
kill (``killable_bus``)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_n = itertools.count()


@contextmanager
def _daemon() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``dbus-daemon --session`` on a private socket: its address (once it listens) and its
    process; stopped (if still running) and removed at the end."""
    exe = shutil.which("dbus-daemon")
    assert exe, "dbus-daemon is missing: install Debian's dbus package (./dev test does)"
    d = tempfile.mkdtemp(prefix="iw-dbus-")
    with open(os.path.join(d, "daemon.log"), "w") as log:
        proc = subprocess.Popen(
            [exe, "--session", "--nofork", "--print-address=1", f"--address=unix:path={d}/bus"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    try:
        address = proc.stdout.readline().strip()  # printed once it listens: ready
        if not address:
            proc.wait(10)
            log_text = Path(d, "daemon.log").read_text()
            raise AssertionError(f"dbus-daemon did not start: {log_text}")
        yield address, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def dbus_session() -> Iterator[str]:
    """Start ``dbus-daemon --session`` on a private socket; its address is exported as
    DBUS_SESSION_BUS_ADDRESS (child processes inherit it) for the whole session."""
    with _daemon() as (address, _), pytest.MonkeyPatch.context() as env:  # restored afterwards
        env.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        yield address


@pytest.fixture
def killable_bus() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A daemon of this test's own (pass its address as ``address=``), and its process, for
    the test to kill."""
    with _daemon() as bus:
        yield bus


@pytest.fixture
def dbus_url(dbus_session: str) -> Callable[[], str]:
    """A function returning a fresh dbus:// URL (a bus name nobody owns) on each call."""
    return lambda: f"dbus://session/io.ipcwire.Test{os.getpid()}.N{next(_n)}/io/ipcwire/Test"
