"""The conformance suite over WebSocket: TCP (ws://) and Unix sockets (ws+unix://)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from tests._loops import AioRun

from ipcwire.testing import acheck_channel, apair_from_url, check_channel, pair_from_url
from ipcwire.ws import SPEC, UNIX_SPEC

_n = itertools.count()


def _urls(kind: str, tmp: Path) -> tuple[Callable[[], str], object]:
    if kind == "tcp":
        return (lambda: "ws://127.0.0.1:0/conformance"), SPEC.capabilities
    return (lambda: f"ws+unix://{tmp}/w{next(_n)}.sock"), UNIX_SPEC.capabilities


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_blocking_conformance(kind: str, sock_dir: Path) -> None:
    url, caps = _urls(kind, sock_dir)
    check_channel(pair_from_url(url), caps, url=url)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_asyncio_conformance(kind: str, sock_dir: Path, aio_run: AioRun) -> None:
    url, caps = _urls(kind, sock_dir)
    aio_run(acheck_channel(apair_from_url(url), caps, url=url))  # type: ignore[arg-type]
