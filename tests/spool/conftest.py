"""A spool directory per test, on a real disk, removed afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def spool_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh directory for spools. /var/tmp when writable: it is disk-backed like
    /var/spool (on this project's machines /tmp is much slower to create files in: 2 ms per
    file, against 15 us)."""
    try:
        d = Path(tempfile.mkdtemp(prefix="ipcwire-spool-", dir="/var/tmp"))
    except OSError:
        yield tmp_path
        return
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
