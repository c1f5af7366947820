"""The bench starts a private D-Bus session bus when the run needs one and none is there."""

from __future__ import annotations

import os

import pytest

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
