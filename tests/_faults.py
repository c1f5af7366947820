"""Counting a child's minor page faults under malloc's default thresholds, held fixed
(``MALLOC_MMAP_THRESHOLD_``, which also stops glibc from raising them as it frees large
blocks): an allocation over 128 KiB is then an mmap and its first touch a fresh fault, every
time. Used by the tests that no read maps memory (ipcwire.aio._read_size)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

__all__ = ["child_faults"]

_FIXED = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def child_faults(code: str, *args: str) -> int:
    """Run ``code`` (which prints the faults it counted, as one integer) with ``args``."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=dict(os.environ, **_FIXED),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return int(out)
