"""Fixtures of the shared-memory tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

_counter = itertools.count()


@pytest.fixture
def shm_url(sock_dir: Path) -> Callable[[], str]:
    """A function returning a fresh shm:// URL whose socket lives in a private directory."""
    return lambda: f"shm://{sock_dir}/m{next(_counter)}.sock"
