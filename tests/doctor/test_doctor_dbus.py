"""``ipcwire doctor dbus://``: no bus, a daemon gone or stopped (reported, never a hang), a
name nobody owns, a name owned (by which process), a name the bus's policy refuses; each
against a real dbus-daemon, and each fix shown to work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests._proc import child, kill9, wait_line
from tests.dbus.conftest import _daemon
from tests.doctor._helpers import findings

import ipcwire
from ipcwire.doctor import check_dbus, diagnose

NAME = f"io.ipcwire.Doctor{os.getpid()}.App"

HOLDER = """
import sys, ipcwire
listener = ipcwire.listen({url!r})
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def bus() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A dbus-daemon of this test's own: its address and its process."""
    with _daemon() as daemon:
        yield daemon


def _url(address: str, name: str = NAME) -> str:
    return f"dbus://session/{name}?address={address}"


def _doctor_env(*args: str, env: dict[str, str]) -> tuple[int, dict[str, object]]:
    cmd = [sys.executable, "-m", "ipcwire", "doctor", *args, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def test_no_bus_says_how_to_start_one_and_starting_one_fixes_it() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR")}  # fmt: skip
    code, data = _doctor_env(f"dbus://session/{NAME}", env=env)
    assert code == 1
    [none] = findings(data, "dbus.no_bus")
    assert "DBUS_SESSION_BUS_ADDRESS is not set" in none["evidence"]
    assert "dbus-run-session" in none["fix"]
    # the fix: under dbus-run-session the bus is there; nobody owns the name on it yet
    out = subprocess.run(["dbus-run-session", "--", sys.executable, "-m", "ipcwire", "doctor",
                          f"dbus://session/{NAME}", "--json"], capture_output=True, text=True,
                         timeout=60, env=env, check=False)  # fmt: skip
    data = json.loads(out.stdout)
    assert not findings(data, "dbus.no_bus")
    assert findings(data, "dbus.no_owner")


def test_owned_name_names_its_process_and_listen_says_in_use(
    bus: tuple[str, subprocess.Popen[str]],
) -> None:
    address, _ = bus
    with child(HOLDER.format(url=_url(address))) as proc:
        wait_line(proc)
        [owned] = check_dbus(_url(address)).find("dbus.owned")
        assert owned.data["pids"] == [proc.pid]
        assert f"pid {proc.pid}" in owned.summary
        [busy] = diagnose(_url(address), listen=True).problems
        assert busy.check == "dbus.in_use"
        assert busy.fix is not None and f"kill {proc.pid}" in busy.fix
        kill9(proc)  # the fix
    report = check_dbus(_url(address), listen=True)
    assert report.ok and report.find("dbus.free")
    ipcwire.listen(_url(address)).close()  # and the name was given back


def test_name_nobody_owns_suggests_a_name_like_it(bus: tuple[str, subprocess.Popen[str]]) -> None:
    address, _ = bus
    with child(HOLDER.format(url=_url(address))) as proc:
        wait_line(proc)
        [missing] = check_dbus(_url(address, NAME + "s")).problems
        assert missing.check == "dbus.no_owner"
        assert missing.data["similar"] == [NAME]
        assert missing.fix is not None and f"did you mean {NAME}?" in missing.fix


def test_stopped_daemon_is_not_answering_within_the_deadline(
    bus: tuple[str, subprocess.Popen[str]],
) -> None:
    address, daemon = bus
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        report = check_dbus(_url(address))
        took = time.monotonic() - started
        [stuck] = report.problems
    finally:
        os.kill(daemon.pid, signal.SIGCONT)  # the fix
    assert took < 10
    assert stuck.check == "dbus.not_answering"
    assert stuck.data["pids"] == [daemon.pid]
    assert stuck.fix == f"the daemon is stopped: kill -CONT {daemon.pid}"
    assert any("stopped" in line and f"pid {daemon.pid}" in line for line in stuck.evidence)
    assert check_dbus(_url(address)).find("dbus.no_owner")  # it answers again


def test_dead_daemon_left_its_socket() -> None:
    with _daemon() as (address, daemon):
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
        [gone] = check_dbus(_url(address)).problems
        assert gone.check == "dbus.no_daemon"
        assert "the daemon died" in gone.summary
        assert any(line.endswith("-> ECONNREFUSED") for line in gone.evidence)


def test_policy_that_refuses_the_name() -> None:
    with _daemon(rules=f'<deny own="{NAME}"/>') as (address, _):
        [denied] = check_dbus(_url(address), listen=True).problems
        assert denied.check == "dbus.policy"
        assert denied.fix is not None and f'<allow own="{NAME}"/>' in denied.fix
        assert check_dbus(_url(address, NAME + "2"), listen=True).find("dbus.free")


def test_system_bus_without_a_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/system_bus_socket")
    [gone] = check_dbus(f"dbus://system/{NAME}").problems
    assert gone.check == "dbus.no_daemon"
    assert gone.fix is not None and "systemctl start dbus" in gone.fix
