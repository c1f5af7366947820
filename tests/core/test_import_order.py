"""Every ipcwire module imports on its own, first: no import cycle that only shows when a
driver module is the first thing a program (or a worker process) imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = r"""
import importlib, pkgutil, sys, traceback
import ipcwire
names = sorted(
    m.name for m in pkgutil.walk_packages(ipcwire.__path__, "ipcwire.")
    if not m.name.endswith("__main__")
)
if sys.argv[3] == "public":  # what programs and workers import first (and python -m targets)
    names = [n for n in names if not any(p.startswith("_") for p in n.split(".")[1:])
             or n == "ipcwire._docs"]
shard, shards = map(int, sys.argv[1:3])
names = names[shard::shards]
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "ipcwire" or m.startswith("ipcwire.")]:
        if not loaded.startswith("ipcwire._ext"):
            del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as exc:
        if "cannot import name" in str(exc) or "partially initialized" in str(exc):
            failed.append(f"{name}: {exc}")
print(len(names))
print("\n".join(failed))
"""


def _imports_first(which: str) -> int:
    """Import each module of ``which`` first in a fresh set of ipcwire modules; how many."""
    # in two processes at once, each taking every other module (half the time on two cores)
    shards = 2
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(i), str(shards), which],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(shards)
    ]
    outs = [p.communicate(timeout=120)[0].splitlines() for p in procs]
    assert [p.returncode for p in procs] == [0] * shards
    failed = [line for out in outs for line in out[1:] if line]
    assert failed == [], "\n".join(failed)
    return sum(int(out[0]) for out in outs)


def test_each_public_module_imports_first() -> None:
    """The modules a program or a worker imports first: no part of its name private."""
    assert _imports_first("public") > 50  # the walk found the package's modules


@pytest.mark.slow
def test_each_module_imports_first() -> None:
    """Every module, the private ones too (``./dev soak``: three times as long)."""
    assert _imports_first("all") > 200


def test_ipcwire_aio_after_a_plain_import_ipcwire() -> None:
    """The docs write ``import ipcwire`` then ``await ipcwire.aio.connect(...)``: that was an
    AttributeError unless something had imported ipcwire.aio. It is imported on first use, so a
    blocking program still does not import asyncio."""
    script = (
        "import sys, ipcwire\n"
        "print('asyncio' in sys.modules)\n"
        "print(ipcwire.aio.connect is sys.modules['ipcwire.aio'].connect)\n"
        "print(callable(ipcwire.doctor.diagnose), callable(ipcwire.testing.check_channel))\n"
        "try:\n"
        "    ipcwire.nonesuch\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out == ["False", "True", "True True", "module 'ipcwire' has no attribute 'nonesuch'"]
