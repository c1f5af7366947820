"""The conformance suite against the stream mechanisms of the foundation (others run it from
their own tests/<mechanism>/test_conformance.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests._loops import AioRun

from ipcwire.registry import lookup
from ipcwire.testing import acheck_channel, apair_from_url, check_channel, pair_from_url

URLS = ["unix_url", "abstract_url", "tcp_url"]


@pytest.mark.parametrize("fixture", URLS)
def test_blocking_conformance(fixture: str, request: pytest.FixtureRequest) -> None:
    url: Callable[[], str] = request.getfixturevalue(fixture)
    spec = lookup(url().split(":")[0])
    check_channel(pair_from_url(url), spec.capabilities, url=url)


@pytest.mark.parametrize("fixture", URLS)
def test_asyncio_conformance(fixture: str, request: pytest.FixtureRequest, aio_run: AioRun) -> None:
    url: Callable[[], str] = request.getfixturevalue(fixture)
    spec = lookup(url().split(":")[0])
    aio_run(acheck_channel(apair_from_url(url), spec.capabilities, url=url))
