"""``ipcwire platforms`` says which shared-memory ring runs: the C extension or the fallback.

Run as a user would, in a fresh process; ``IPCWIRE_SHM_IMPL=python`` makes the fallback the
one that runs (as it is when the extension is not built).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

IPCWIRE = [sys.executable, "-m", "ipcwire", "platforms"]


def _platforms(*args: str, impl: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "IPCWIRE_SHM_IMPL"}
    if impl is not None:
        env["IPCWIRE_SHM_IMPL"] = impl
    out = subprocess.run(
        [*IPCWIRE, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize(
    ("impl", "expected", "words"),
    [(None, "c", "C extension"), ("python", "python", "pure-Python fallback")],
)
def test_platforms_names_the_shm_implementation(
    impl: str | None, expected: str, words: str
) -> None:
    rows = {m["scheme"]: m for m in json.loads(_platforms("--json", impl=impl))["mechanisms"]}
    assert rows["shm"]["implementation"] == expected
    assert rows["shm"]["available"] is True
    assert rows["unix"]["implementation"] is None  # only one implementation: nothing to say

    text = _platforms(impl=impl)
    assert f"shm: the {words} runs here (implementation '{expected}')" in text
