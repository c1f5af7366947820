"""The conformance suite against the stream mechanisms of the foundation (others run it from
their own tests/<mechanism>/test_conformance.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ipcwire.registry import lookup
from ipcwire.testing import acheck_channel, apair_from_url, check_channel, pair_from_url

URLS = ["unix_url", "abstract_url", "tcp_url"]


@pytest.mark.parametrize("fixture", URLS)
def test_blocking_conformance(fixture: str, request: pytest.FixtureRequest) -> None:
    url: Callable[[], str] = request.getfixturevalue(fixture)
    spec = lookup(url().split(":")[0])
    check_channel(pair_from_url(url), spec.capabilities, url=url)


@pytest.mark.parametrize("fixture", URLS)
def test_asyncio_conformance(fixture: str, request: pytest.FixtureRequest) -> None:
    url: Callable[[], str] = request.getfixturevalue(fixture)
    spec = lookup(url().split(":")[0])
    asyncio.run(acheck_channel(apair_from_url(url), spec.capabilities, url=url))


@pytest.mark.parametrize("fixture", URLS)
def test_asyncio_conformance_on_uvloop(fixture: str, request: pytest.FixtureRequest) -> None:
    """The same suite on uvloop's event loop (what uvicorn and many agent servers run):
    its transports are not asyncio's classes, and ipcwire must not assume they are."""
    import uvloop

    url: Callable[[], str] = request.getfixturevalue(fixture)
    spec = lookup(url().split(":")[0])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        runner.run(acheck_channel(apair_from_url(url), spec.capabilities, url=url))
