"""The bench starts a private D-Bus session bus when the run needs one and none is there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tests._proc import wait_until

from ipcwire.bench.buses import session_bus_for_run


def test_private_bus_for_a_run_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    notes: list[str] = []
    with session_bus_for_run(True, notes) as address:
        assert address is not None
        assert address.startswith("unix:path=")
        assert os.environ["DBUS_SESSION_BUS_ADDRESS"] == address
        path = address.split("unix:path=", 1)[1].split(",", 1)[0]
        assert os.path.exists(path)  # the daemon listens there
    assert "DBUS_SESSION_BUS_ADDRESS" not in os.environ
    assert not os.path.exists(path)  # stopped and cleaned up
    assert any("started a private `dbus-daemon --session`" in n for n in notes)


def test_private_bus_under_a_long_tmpdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A long $TMPDIR (pytest-xdist's, a CI job's): the socket's path would pass dbus-daemon's
    99 bytes, and the bus "did not start (exit 1)", so every D-Bus row of the run was
    "not measured: no D-Bus session bus". It goes under /tmp then."""
    long = tmp_path / ("d" * max(1, 100 - len(str(tmp_path))))
    long.mkdir()
    monkeypatch.setenv("TMPDIR", str(long))
    monkeypatch.setattr(tempfile, "tempdir", None)  # (tempfile reads $TMPDIR once)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    notes: list[str] = []
    with session_bus_for_run(True, notes) as address:
        assert address is not None, notes
        path = address.split("unix:path=", 1)[1].split(",", 1)[0]
        assert os.path.exists(path)
    assert not os.path.exists(path)
    assert list(long.iterdir()) == []  # nothing left under $TMPDIR either


def test_an_existing_bus_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    notes: list[str] = []
    with session_bus_for_run(True, notes) as address:
        assert address is None
    assert os.environ["DBUS_SESSION_BUS_ADDRESS"] == "unix:path=/nonexistent/bus"
    assert notes == []


def test_no_bus_when_the_run_has_no_dbus_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with session_bus_for_run(False, []) as address:
        assert address is None
    assert "DBUS_SESSION_BUS_ADDRESS" not in os.environ


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, command name, state) of every process now."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        out[int(entry)] = (int(ppid), name, state)
    return out


def _descendants(root: int) -> dict[int, str]:
    procs = _processes()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, name, _) in procs.items():
            if ppid == parent and pid not in found:
                found[pid] = name
                frontier.append(pid)
    return found


def _alive(pids: list[int]) -> list[int]:
    procs = _processes()
    return [p for p in pids if p in procs and procs[p][2] not in ("Z", "X")]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill -9"])
def test_a_stopped_bench_leaves_no_daemon_and_no_workers(how: int, tmp_path: Path) -> None:
    """The bench is stopped while it measures D-Bus on its private bus: SIGTERM unwinds like
    Ctrl-C (workers stopped, daemon stopped, run directories removed); after kill -9 the
    daemon follows its parent (PR_SET_PDEATHSIG) and the workers see their control pipe
    close."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR")
    }
    env["TMPDIR"] = str(tmp_path)
    argv = [sys.executable, "-m", "ipcwire", "bench", "--quick", "--mechanisms", "dbus"]
    argv += ["--no-floor", "--api", "blocking", "--repeat", "100"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def running() -> bool:
            kids = _descendants(proc.pid)
            return "dbus-daemon" in kids.values() and len(kids) >= 3  # daemon + two workers

        assert wait_until(running, 60), _descendants(proc.pid)
        kids = list(_descendants(proc.pid))
        os.kill(proc.pid, how)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_until(lambda: not _alive(kids), 20), _alive(kids)
    if how == signal.SIGTERM:
        assert list(tmp_path.iterdir()) == []  # the run's and the bus's directories
