"""D-Bus: connecting with (almost) no descriptors left gives ``ResourceExhausted`` (it said
``MechanismUnavailable``, "cannot reach the D-Bus daemon ... is it running?", as if the daemon
were the problem), and leaves nothing open. The same check as tests/test_connect_fd_limit.py,
on a private session bus."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from tests._proc import child, wait_line
from tests.test_connect_fd_limit import CLIENT, ROOMS, SERVER


def test_connect_at_the_descriptor_limit(dbus_url: Callable[[], str]) -> None:
    with child(SERVER.replace("sys.argv[1]", repr(dbus_url()))) as server:
        url = wait_line(server)
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, url, str(ROOMS)],
            check=False,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert len(lines) == 2 * ROOMS, out.stdout
    bad = [
        line
        for line in lines
        if line.split()[2] not in ("ok", "ResourceExhausted") or not line.endswith("left 0")
    ]
    assert not bad, "\n".join(bad)
    assert any(" 0 ResourceExhausted" in line for line in lines), out.stdout
