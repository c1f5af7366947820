"""``ipcwire doctor clipboard:``: no display, no X server (or one that died), an X server
that is stopped or refuses this client, no tool, and a selection owner that does not answer;
against real Xvfb servers (as tests/clipboard starts them) and xclip, each fix shown to work."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.clipboard.conftest import _xvfb

import ipcwire
from ipcwire.doctor import check_clipboard, diagnose


@pytest.fixture(autouse=True)
def _no_wayland(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


@pytest.fixture
def xvfb(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An X server of this test's own; DISPLAY names it."""
    with _xvfb() as (display, proc):
        monkeypatch.setenv("DISPLAY", display)
        yield display, proc


def _checks(url: str = "clipboard:") -> dict[str, str]:
    return {f.check: f.status for f in diagnose(url).findings}


def test_no_display_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, xvfb: tuple[str, subprocess.Popen[bytes]]
) -> None:
    monkeypatch.delenv("DISPLAY")
    out = subprocess.run([sys.executable, "-m", "ipcwire", "doctor", "clipboard:", "--json"],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 1, out.stderr
    [report] = json.loads(out.stdout)["reports"]
    [none] = report["findings"]
    assert none["check"] == "clipboard.no_display"
    assert "xvfb-run -a" in none["fix"] and "export DISPLAY=" in none["fix"]
    monkeypatch.setenv("DISPLAY", xvfb[0])  # the fix
    report2 = check_clipboard()
    assert report2.ok and report2.find("clipboard.display") and report2.find("clipboard.tool")


def test_live_display_names_the_server_the_tool_and_the_owner(
    xvfb: tuple[str, subprocess.Popen[bytes]],
) -> None:
    _, server = xvfb
    report = check_clipboard()
    assert report.ok
    [shown] = report.find("clipboard.display")
    assert shown.data["pids"] == [server.pid]
    [tool] = report.find("clipboard.tool")
    assert tool.data["tool"] == "xclip"
    [owner] = report.find("clipboard.owner")
    assert "nobody owns the clipboard selection" in owner.summary
    with ipcwire.connect("clipboard:") as clip:
        clip.send("from the doctor's test")
        report = check_clipboard()
        [owner] = report.find("clipboard.owner")
        [pid] = owner.data["pids"]
        assert "xclip" in Path(f"/proc/{pid}/cmdline").read_text()
        [paste] = report.find("clipboard.paste")
        assert paste.data["size"] == len("from the doctor's test")


def test_selection_owner_stopped_makes_pastes_wait(
    xvfb: tuple[str, subprocess.Popen[bytes]],
) -> None:
    with ipcwire.connect("clipboard:") as clip:
        clip.send("held")
        [owner] = check_clipboard().find("clipboard.owner")
        [pid] = owner.data["pids"]
        os.kill(pid, signal.SIGSTOP)
        try:
            report = diagnose("clipboard:")  # (each run waits out a paste: one run)
            checks = {f.check: f.status for f in report.findings}
            [stuck] = report.find("clipboard.owner_stopped")
        finally:
            os.kill(pid, signal.SIGCONT)  # the fix
        assert checks["clipboard.owner_stopped"] == "problem"
        assert checks["clipboard.paste_hangs"] == "problem"
        assert stuck.fix is not None and stuck.fix.startswith(f"kill -CONT {pid}")
        assert check_clipboard().ok


def test_stopped_x_server_is_not_answering_within_the_deadline(
    xvfb: tuple[str, subprocess.Popen[bytes]],
) -> None:
    _, server = xvfb
    os.kill(server.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        [stuck] = check_clipboard().problems
        took = time.monotonic() - started
    finally:
        os.kill(server.pid, signal.SIGCONT)  # the fix
    assert took < 10
    assert stuck.check == "clipboard.x_not_answering"
    assert stuck.fix == f"the X server is stopped: kill -CONT {server.pid}"
    assert check_clipboard().ok


# The dead server's display: a fixed, high number. The number of a server killed is free at
# once, and an Xvfb started with -displayfd (the other pytest worker's) takes the lowest free
# one: it served the display again before the check ("left from one that died" failed).
def _xvfb_started(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """An Xvfb with ``args``, once it accepts (-displayfd says so), and its display number."""
    r, w = os.pipe()
    server = subprocess.Popen(["Xvfb", *args, "-displayfd", str(w), "-nolisten", "tcp",
                               "-screen", "0", "320x240x24"], pass_fds=(w,),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(w)
    try:
        number = b""
        while not number.endswith(b"\n"):  # written once it accepts
            assert select.select([r], [], [], 30)[0], "Xvfb did not start"
            chunk = os.read(r, 64)
            assert chunk, f"Xvfb {' '.join(args)} exited ({server.wait(5)})"
            number += chunk
    except BaseException:
        server.kill()
        server.wait(10)
        raise
    finally:
        os.close(r)
    return server, number.decode().strip()


DEAD_DISPLAY = 947


def test_dead_x_server_and_a_display_nobody_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = _xvfb_started(f":{DEAD_DISPLAY}")
    try:
        server.kill()
        server.wait(10)
        monkeypatch.setenv("DISPLAY", f":{DEAD_DISPLAY}")
        [dead] = check_clipboard().problems
        assert dead.check == "clipboard.no_x_server"
        assert "left from one that died" in dead.summary
    finally:
        server.kill()
        server.wait(10)
        for left in (f"/tmp/.X11-unix/X{DEAD_DISPLAY}", f"/tmp/.X{DEAD_DISPLAY}-lock"):
            with contextlib.suppress(FileNotFoundError):  # what the dead server left
                os.unlink(left)
    free = next(n for n in range(900, 1000) if not os.path.exists(f"/tmp/.X11-unix/X{n}"))
    [none] = check_clipboard(f"clipboard:?display=:{free}").problems
    assert none.check == "clipboard.no_x_server"
    assert none.fix is not None and f"Xvfb :{free}" in none.fix


def test_no_tool_installed(xvfb: tuple[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # a PATH without xclip or xsel
    cmd = [sys.executable, "-m", "ipcwire", "doctor", "clipboard:", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert out.returncode == 1, out.stderr
    [report] = json.loads(out.stdout)["reports"]
    [missing] = [f for f in report["findings"] if f["status"] == "problem"]
    assert missing["check"] == "clipboard.no_tool"
    assert "apt install xclip" in missing["fix"]


def _xauthority(path: Path, cookie: bytes) -> None:
    """An Xauthority file with one entry for any display of any host (FamilyWild)."""

    def field(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b

    path.write_bytes((0xFFFF).to_bytes(2, "big") + field(b"") + field(b"")
                     + field(b"MIT-MAGIC-COOKIE-1") + field(cookie))  # fmt: skip


def test_x_server_that_wants_a_cookie(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    auth = tmp_path / "Xauthority"
    _xauthority(auth, os.urandom(16))
    server, number = _xvfb_started("-auth", str(auth))
    try:
        monkeypatch.setenv("DISPLAY", f":{number}")
        monkeypatch.setenv("XAUTHORITY", str(tmp_path / "none"))
        [refused] = check_clipboard().problems
        assert refused.check == "clipboard.x_refused"
        assert "uthorization" in refused.summary  # the X server's own reason
        assert refused.fix is not None and "XAUTHORITY" in refused.fix
        monkeypatch.setenv("XAUTHORITY", str(auth))  # the fix
        assert check_clipboard().find("clipboard.display")
    finally:
        server.terminate()
        server.wait(10)
