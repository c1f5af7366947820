"""Private D-Bus session daemons for the tests: one for the whole session, and one a test may
kill (``killable_bus``)."""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

_n = itertools.count()


# A session bus's configuration with more rules in its default policy, and more settings.
_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    {rules}
  </policy>
  {settings}
</busconfig>
"""


@contextmanager
def _daemon(rules: str = "", settings: str = "") -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``dbus-daemon --session`` on a private socket: its address (once it listens) and its
    process; stopped (if still running) and removed at the end. ``rules`` are added to its
    default policy, ``settings`` (``<limit .../>``) to its configuration."""
    exe = shutil.which("dbus-daemon")
    assert exe, "dbus-daemon is missing: install Debian's dbus package (./dev test does)"
    d = tempfile.mkdtemp(prefix="iw-dbus-")
    where = [f"--address=unix:path={d}/bus"]
    if rules or settings:
        with open(os.path.join(d, "bus.conf"), "w") as conf:
            conf.write(_CONFIG.format(path=f"{d}/bus", rules=rules, settings=settings))
        where = [f"--config-file={d}/bus.conf"]
    else:
        where.insert(0, "--session")
    with open(os.path.join(d, "daemon.log"), "w") as log:
        proc = subprocess.Popen(
            [exe, *where, "--nofork", "--print-address=1"],
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
def configured_bus() -> Iterator[Callable[..., str]]:
    """A function starting a daemon of this test's own with more policy ``rules`` and
    ``settings`` (see ``_daemon``); it returns the daemon's address (pass it as ``address=``)."""
    with ExitStack() as stack:
        yield lambda rules="", settings="": stack.enter_context(_daemon(rules, settings))[0]


@pytest.fixture
def dbus_url(dbus_session: str) -> Callable[[], str]:
    """A function returning a fresh dbus:// URL (a bus name nobody owns) on each call."""
    return lambda: f"dbus://session/io.ipcwire.Test{os.getpid()}.N{next(_n)}/io/ipcwire/Test"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Collect the garbage the D-Bus tests left before pytest's terminal summary, which
    imports hypothesis late when nothing did before (pytest rewrites it: ast.parse). On
    CPython 3.11.7 that parse failed with 'SystemError: AST constructor recursion depth
    mismatch' after every test had passed, in some selections of these tests; a collection
    during the parse (running these objects' finalizers) is the likely trigger, and collecting
    here first avoids it."""
    gc.collect()
