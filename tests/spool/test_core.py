"""What both spool drivers share from ``_channel.py``, without waiting: the timeout decision
and wait length, the recv_many batch and claim() with a message that does not decode; and
both drivers' Timeout saying the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.errors import RemoteProtocolError, Timeout
from ipcwire.options import ChannelOptions
from ipcwire.spool._channel import ChannelCore
from ipcwire.spool._options import spool_options


@pytest.fixture
def core(spool_dir: Path) -> Iterator[ChannelCore]:
    url = f"spool://{spool_dir}/q"
    endpoint = parse_url(url)
    kw: dict[str, Any] = {"codec": "json", "reap_interval": 2.0, "watch": "polling"}
    options = ChannelOptions.build(endpoint, kw)
    cfg = spool_options(endpoint, kw)
    c = ChannelCore(cfg.store(url), options.wire(), url, cfg)
    try:
        yield c
    finally:
        c._settle(ack=True)
        c._close_files()


def test_wait_time_waits_until_the_reap_or_the_deadline_then_gives_up(core: ChannelCore) -> None:
    core._prepare_claim(100.0)  # reaps now, next at 102.0
    assert core._wait_time(100.0, None, None) == 2.0
    assert core._wait_time(100.0, 100.5, 0.5) == 0.5
    assert core._wait_time(101.5, 103.0, 3.0) == 0.5  # the reap comes first
    assert core._wait_time(102.5, None, None) == 0.0  # reap overdue: try again at once
    with pytest.raises(Timeout, match=r"no message in spool://\S+ within 0\.5 s"):
        core._wait_time(100.5, 100.5, 0.5)
    with pytest.raises(Timeout, match=r"no message in spool://\S+ yet$"):
        core._wait_time(100.0, 100.0, 0)


def test_batch_stops_at_a_message_that_does_not_decode(core: ChannelCore) -> None:
    core._store.put_many([b"1", b"2", b"{not json", b"4"])
    first = core._store.try_claim(core._max_frame)
    assert first is not None
    assert core._batch(first, None) == [1, 2]  # the third went to dead/ and ended the batch
    assert core._store.counts()["dead"] == 1
    core._ack_unacked()
    claim = core._store.try_claim(core._max_frame)
    assert claim is not None
    assert core._batch(claim, 1) == [4]


def test_a_delivery_that_does_not_decode_goes_to_dead(core: ChannelCore) -> None:
    core._store.put(b"{not json")
    claim = core._store.try_claim(core._max_frame)
    assert claim is not None
    with pytest.raises(RemoteProtocolError):
        core._deliver(claim)
    assert claim.done and not core._claims
    assert core._store.counts() == {"tmp": 0, "new": 0, "cur": 0, "dead": 1}


def test_both_drivers_say_the_same_when_nothing_comes(spool_dir: Path, aio_run: AioRun) -> None:
    url = f"spool://{spool_dir}/q"
    with ipcwire.connect(url) as ch, pytest.raises(Timeout) as blocking:
        ch.recv(timeout=0)

    async def main() -> None:
        async with await aio.connect(url) as ach:
            await ach.recv(timeout=0)

    with pytest.raises(Timeout) as asyncio_:
        aio_run(main())
    assert str(asyncio_.value) == str(blocking.value)


def test_a_path_that_cannot_be_watched_says_why_not_the_watch_limit(tmp_path: Path) -> None:
    """A missing path was reported as "cannot watch (...; see fs.inotify.max_user_watches)":
    a sysctl to raise for a file that simply was not there."""
    from ipcwire.spool._watch import IN_CLOSE, Watcher

    missing = tmp_path / "gone.lock"
    w = Watcher([(str(missing), IN_CLOSE)])
    assert w.mode == "polling" and w.fileno() is None
    assert str(missing) in w.reason and "No such file" in w.reason
    assert "max_user_watches" not in w.reason
