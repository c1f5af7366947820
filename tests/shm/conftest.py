"""Fixtures of the shared-memory tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ipcwire import registry
from ipcwire.shm import SPEC

_counter = itertools.count()


@pytest.fixture(autouse=True)
def shm_registered() -> Iterator[None]:
    """``shm://`` URLs work in these tests even before ipcwire.shm is listed in
    registry.BUILTIN_MECHANISMS; other tests never see the registration (it is undone)."""
    if SPEC in registry.mechanisms():
        yield
        return
    registry.register(SPEC)
    try:
        yield
    finally:
        for scheme in SPEC.schemes:
            registry._SPECS.pop(scheme, None)
        registry._ORDER.remove(SPEC)


@pytest.fixture
def shm_url(sock_dir: Path) -> Callable[[], str]:
    """A function returning a fresh shm:// URL whose socket lives in a private directory."""
    return lambda: f"shm://{sock_dir}/m{next(_counter)}.sock"
