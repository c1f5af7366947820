"""The public conformance suite against shared-memory channels, both implementations."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests._loops import AioRun

from ipcwire.shm import SPEC
from ipcwire.testing import acheck_channel, apair_from_url, check_channel, pair_from_url


def test_blocking_conformance(shm_url: Callable[[], str]) -> None:
    check_channel(pair_from_url(shm_url), SPEC.capabilities, url=shm_url)


def test_asyncio_conformance(shm_url: Callable[[], str], aio_run: AioRun) -> None:
    aio_run(acheck_channel(apair_from_url(shm_url), SPEC.capabilities, url=shm_url))


@pytest.mark.parametrize("policy", ["spin", "park"])
def test_blocking_conformance_other_policies(shm_url: Callable[[], str], policy: str) -> None:
    url = lambda: f"{shm_url()}?policy={policy}"  # noqa: E731
    check_channel(pair_from_url(url), SPEC.capabilities, url=url, codecs=("bytes", "json"))


@pytest.mark.parametrize("policy", ["spin", "park"])
def test_asyncio_conformance_other_policies(
    shm_url: Callable[[], str], policy: str, aio_run: AioRun
) -> None:
    url = lambda: f"{shm_url()}?policy={policy}"  # noqa: E731
    aio_run(
        acheck_channel(apair_from_url(url), SPEC.capabilities, url=url, codecs=("bytes", "json"))
    )
