"""The conformance suite over gRPC: TCP (grpc://) and Unix sockets (grpc+unix://)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from tests._loops import AioRun

from ipcwire.grpc import SPEC
from ipcwire.testing import acheck_channel, apair_from_url, check_channel, pair_from_url

_n = itertools.count()


def _url(kind: str, tmp: Path) -> Callable[[], str]:
    if kind == "tcp":
        return lambda: "grpc://127.0.0.1:0"
    return lambda: f"grpc+unix://{tmp}/g{next(_n)}.sock"


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_blocking_conformance(kind: str, sock_dir: Path) -> None:
    url = _url(kind, sock_dir)
    check_channel(pair_from_url(url), SPEC.capabilities, url=url)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_asyncio_conformance(kind: str, sock_dir: Path, aio_run: AioRun) -> None:
    url = _url(kind, sock_dir)
    aio_run(acheck_channel(apair_from_url(url), SPEC.capabilities, url=url))
