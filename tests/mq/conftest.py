"""Fresh queue names, and a check that no test leaves a queue behind."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import posix_ipc
import pytest

_n = itertools.count()
PREFIX = f"/iwt{os.getpid()}"


def fresh_name() -> str:
    return f"{PREFIX}-{next(_n)}"


@pytest.fixture
def mq_url() -> Iterator[Callable[..., str]]:
    """A function returning a fresh mq:// URL (with optional query) on each call; after the
    test, every queue the URLs named must be gone."""
    names: list[str] = []

    def make(query: str = "") -> str:
        name = fresh_name()
        names.append(name)
        return f"mq://{name}" + (f"?{query}" if query else "")

    yield make
    leaked = []
    for name in names:
        try:
            posix_ipc.unlink_message_queue(name)
            leaked.append(name)
        except posix_ipc.ExistentialError:
            pass
    assert not leaked, f"queues left behind: {leaked}"
