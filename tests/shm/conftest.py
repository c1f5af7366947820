"""Fixtures of the shared-memory tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from ipcwire import registry
from ipcwire.shm import SPEC

# Until ipcwire.shm is listed in registry.BUILTIN_MECHANISMS (then this is a no-op).
registry.register(SPEC)

_counter = itertools.count()


@pytest.fixture
def shm_url(sock_dir: Path) -> Callable[[], str]:
    """A function returning a fresh shm:// URL whose socket lives in a private directory."""
    return lambda: f"shm://{sock_dir}/m{next(_counter)}.sock".replace("shm:///", "shm:///", 1)
