"""Running ``ipcwire doctor`` the way users do: as a command, also as another user."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from tests._proc import NOBODY

# Everything doctor needs is imported before the child drops to uid nobody: the interpreter
# and its standard library live under /root, which nobody cannot read.
_AS_NOBODY = textwrap.dedent(
    f"""
    import os, sys, json, encodings.idna
    import ipcwire, ipcwire.unix.blocking, ipcwire.tcp.blocking, ipcwire.doctor
    import ipcwire.cli.doctor
    from ipcwire.cli.main import build_parser, main
    build_parser()
    ipcwire.mechanisms()
    os.setgroups([])
    os.setgid({NOBODY})
    os.setuid({NOBODY})
    """
)


def doctor(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``ipcwire doctor ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "ipcwire", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def doctor_json(*args: str, as_nobody: bool = False) -> tuple[int, dict[str, Any]]:
    """Exit status and JSON of ``ipcwire doctor ARGS --json`` (as uid nobody if asked)."""
    if as_nobody:
        code = _AS_NOBODY + f"sys.exit(main(['doctor', *{list(args)!r}, '--json']))\n"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, check=False)  # fmt: skip
    else:
        out = doctor(*args, "--json")
    assert out.returncode in (0, 1), out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return out.returncode, data


def findings(data: dict[str, Any], check: str) -> list[dict[str, Any]]:
    """The findings named ``check`` in a doctor JSON document."""
    return [f for r in data["reports"] for f in r["findings"] if f["check"] == check]


def connect_as_nobody(url: str) -> str:
    """Connect (and close) as uid nobody; the child prints "connected" or the error."""
    code = _AS_NOBODY + textwrap.dedent(
        f"""
        try:
            ipcwire.connect({url!r}, timeout=5).close()
            print("connected")
        except ipcwire.IpcwireError as exc:
            print(type(exc).__name__, exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()
