"""The public conformance suite against POSIX message queue channels."""

from __future__ import annotations

from collections.abc import Callable

from tests._loops import AioRun

from ipcwire.mq import SPEC
from ipcwire.testing import acheck_channel, apair_from_url, check_channel, pair_from_url


def test_blocking_conformance(mq_url: Callable[..., str]) -> None:
    # The listener checks run 8 clients at once: two queues each. At the kernel's default
    # 10 x 8 KiB a user's RLIMIT_MSGQUEUE (800 KiB, every process of the user: the other
    # pytest worker's queues too) holds about 4 channels, so those clients use 2-message
    # queues, ~280 KB for the 8 (the pair checks keep the defaults).
    check_channel(pair_from_url(mq_url), SPEC.capabilities, url=lambda: mq_url("maxmsg=2"))


def test_asyncio_conformance(mq_url: Callable[..., str], aio_run: AioRun) -> None:
    aio_run(
        acheck_channel(apair_from_url(mq_url), SPEC.capabilities, url=lambda: mq_url("maxmsg=2"))
    )
