"""Shared fixtures: fresh endpoint URLs in private temporary directories."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_counter = itertools.count()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short private directory for socket files (paths must stay under 107 bytes)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="iw-", dir="/tmp"))
    try:
        yield d
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


@pytest.fixture
def unix_url(sock_dir: Path) -> Callable[[], str]:
    """A function returning a fresh unix:// URL on each call."""
    return lambda: f"unix://{sock_dir}/s{next(_counter)}.sock"


@pytest.fixture
def tcp_url() -> Callable[[], str]:
    """A function returning a loopback TCP URL on a free port (port 0)."""
    return lambda: "tcp://127.0.0.1:0"


@pytest.fixture
def abstract_url() -> Callable[[], str]:
    return lambda: f"unix:@ipcwire-test-{os.getpid()}-{next(_counter)}"
