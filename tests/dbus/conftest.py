"""A private D-Bus session daemon for the tests: started once, stopped at the end."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_n = itertools.count()


@pytest.fixture(scope="session")
def dbus_session() -> Iterator[str]:
    """Start ``dbus-daemon --session`` on a private socket; its address is exported as
    DBUS_SESSION_BUS_ADDRESS (child processes inherit it) for the whole session."""
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
    address = proc.stdout.readline().strip()  # printed once it listens: ready
    if not address:
        proc.wait(10)
        log_text = Path(d, "daemon.log").read_text()
        raise AssertionError(f"dbus-daemon did not start: {log_text}")
    old = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
    try:
        yield address
    finally:
        if old is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = old
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dbus_url(dbus_session: str) -> Callable[[], str]:
    """A function returning a fresh dbus:// URL (a bus name nobody owns) on each call."""
    return lambda: f"dbus://session/io.ipcwire.Test{os.getpid()}.N{next(_n)}/io/ipcwire/Test"
