"""A real X server (Xvfb) for the clipboard tests: it picks a free display and says when it
is ready (-displayfd); DISPLAY is set for the tests and the tools they run."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def _xvfb() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An Xvfb on a free display: its display name (once it accepts) and its process."""
    exe = shutil.which("Xvfb")
    assert exe, "Xvfb is missing: install Debian's xvfb package (./dev test does)"
    assert shutil.which("xclip"), "xclip is missing: install Debian's xclip (./dev test does)"
    r, w = os.pipe()
    proc = subprocess.Popen(
        [exe, "-displayfd", str(w), "-nolisten", "tcp", "-noreset", "-screen", "0", "320x240x24"],
        pass_fds=(w,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    number = b""
    try:
        while not number.endswith(b"\n"):  # Xvfb writes its display number once it accepts
            ready, _, _ = select.select([r], [], [], 30)
            assert ready, "Xvfb did not start within 30 s"
            chunk = os.read(r, 64)
            assert chunk, f"Xvfb exited ({proc.wait(5)}) before it was ready"
            number += chunk
    finally:
        os.close(r)
    try:
        yield f":{number.decode().strip()}", proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a test may have stopped it
            proc.terminate()  # xclip's serving processes exit with their X connection
        proc.wait(10)


@pytest.fixture(scope="module")
def x_display() -> Iterator[str]:
    with _xvfb() as (display, _), pytest.MonkeyPatch.context() as env:  # restored afterwards
        env.setenv("DISPLAY", display)
        yield display


@pytest.fixture
def own_display() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An X server of this test's own (pass its display as ``display=``), and its process,
    for the test to stop or kill."""
    with _xvfb() as xvfb:
        yield xvfb


@pytest.fixture(autouse=True)
def _no_wayland(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
