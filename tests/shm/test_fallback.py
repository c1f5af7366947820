"""The pure-Python fallback is what runs when the extension is not there, and it works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

BLOCK_EXTENSION = """
import importlib.abc, sys

class NoExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ipcwire._ext._native":
            raise ImportError("extension not built (simulated)")
        return None

sys.meta_path.insert(0, NoExtension())
"""

ROUND_TRIP = """
import os, socket, threading, time
import ipcwire.shm
from ipcwire.shm._setup import accept_link, connect_link

print(ipcwire.shm.IMPLEMENTATION)
a, b = socket.socketpair()
server = []
t = threading.Thread(
    target=lambda: server.append(accept_link(b, deadline=time.monotonic() + 10))
)
t.start()
client = connect_link(a, deadline=time.monotonic() + 10, capacity=(4096, 4096))
t.join()
client.tx.send(b"x" * 2500, timeout=10)  # three fragments; they fit
assert server[0].rx.recv(timeout=10) == b"x" * 2500
server[0].tx.send(b"pong")
print(client.rx.recv(timeout=10).decode())
client.close()
server[0].close()
"""


def _run(code: str, env: dict[str, str] | None = None) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_without_the_extension_the_python_ring_is_used() -> None:
    assert _run(BLOCK_EXTENSION + ROUND_TRIP) == ["python", "pong"]


def test_the_environment_can_force_the_python_ring() -> None:
    assert _run(ROUND_TRIP, {"IPCWIRE_SHM_IMPL": "python"}) == ["python", "pong"]


def test_the_extension_is_preferred_when_built() -> None:
    try:
        import ipcwire._ext._native  # noqa: F401
    except ImportError:
        pytest.skip("the C extension is not built here")
    env = {k: v for k, v in os.environ.items() if k != "IPCWIRE_SHM_IMPL"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ROUND_TRIP)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.stdout.split() == ["c", "pong"], proc.stderr


def test_the_fallback_refuses_weakly_ordered_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from ipcwire.errors import MechanismUnavailable
    from ipcwire.shm import _pyring

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(MechanismUnavailable, match="C extension"):
        _pyring.PyRing(bytearray(8192), "consumer", policy="spin")


def test_probe_says_shared_memory_works_here(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    import ipcwire.shm

    assert ipcwire.shm.probe() is None
    monkeypatch.setattr(ipcwire.shm, "IMPLEMENTATION", "python")
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    assert "C extension" in (ipcwire.shm.probe() or "")
