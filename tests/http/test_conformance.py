"""The conformance suite over HTTP: TCP (http://) and Unix sockets (http+unix://)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from tests._loops import AioRun

from ipcwire.http import SPEC
from ipcwire.testing import acheck_channel, apair_from_url, check_channel, pair_from_url

_n = itertools.count()


def _url(kind: str, tmp: Path) -> Callable[[], str]:
    if kind == "tcp":
        return lambda: "http://127.0.0.1:0/conformance"
    return lambda: f"http+unix://{tmp}/h{next(_n)}.sock?prefix=/api"


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_blocking_conformance(kind: str, sock_dir: Path) -> None:
    url = _url(kind, sock_dir)
    check_channel(pair_from_url(url), SPEC.capabilities, url=url)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_asyncio_conformance(kind: str, sock_dir: Path, aio_run: AioRun) -> None:
    url = _url(kind, sock_dir)
    aio_run(acheck_channel(apair_from_url(url), SPEC.capabilities, url=url))
