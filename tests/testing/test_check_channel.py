"""The conformance suite must fail a broken channel: real unix channels, each bent by a
wrapper the way a buggy mechanism would bend them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel, ChannelStatistics
from ipcwire.errors import Timeout
from ipcwire.registry import lookup
from ipcwire.testing import (
    ConformanceError,
    acheck_channel,
    apair_from_url,
    check_channel,
    pair_from_url,
)


class Bent(Channel):
    """A real channel whose received messages pass through ``bend``."""

    def __init__(self, inner: Channel, bend: Callable[[Any], Any]) -> None:
        self._inner = inner
        self._bend = bend
        self.url = inner.url

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        self._inner.send(obj, timeout=timeout)

    def recv(self, *, timeout: float | None = None) -> Any:
        return self._bend(self._inner.recv(timeout=timeout))

    def close(self) -> None:
        self._inner.close()

    def statistics(self) -> ChannelStatistics:
        return self._inner.statistics()

    @property
    def closed(self) -> bool:
        return self._inner.closed


def _bent_pair(url: Callable[[], str], bend: Callable[[Any], Any]) -> Any:
    real = pair_from_url(url)

    @contextlib.contextmanager
    def make(**options: Any) -> Iterator[tuple[Channel, Channel]]:
        with real(**options) as (a, b):
            yield Bent(a, bend), Bent(b, bend)

    return make


def _deep(change: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return change(obj)

    return walk


def _bool_as_int(obj: Any) -> Any:
    return int(obj) if isinstance(obj, bool) else obj


def _int_as_float(obj: Any) -> Any:
    return float(obj) if type(obj) is int and abs(obj) <= 2**53 else obj


def _set_as_frozenset(obj: Any) -> Any:
    return frozenset(obj) if type(obj) is set else obj


@pytest.mark.parametrize(
    ("bend", "codec"),
    [(_bool_as_int, "json"), (_int_as_float, "json"), (_set_as_frozenset, "pickle")],
)
def test_a_codec_that_changes_types_fails(
    unix_url: Callable[[], str], bend: Callable[[Any], Any], codec: str
) -> None:
    # true arriving as 1, -(2**53) as -9007199254740992.0, a set as a frozenset: each is ==
    # to what was sent, and none is what was sent.
    caps = lookup("unix").capabilities
    with pytest.raises(ConformanceError, match=f"codec {codec}"):
        check_channel(_bent_pair(unix_url, _deep(bend)), caps, codecs=(codec,))


class AioMiscounting(AioChannel):
    """A real asyncio channel whose statistics count each message twice."""

    def __init__(self, inner: AioChannel) -> None:
        self._inner = inner
        self.url = inner.url

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        await self._inner.send(obj, timeout=timeout)

    async def recv(self, *, timeout: float | None = None) -> Any:
        return await self._inner.recv(timeout=timeout)

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _aclose_after(self, exc: BaseException | None) -> None:
        await self._inner._aclose_after(exc)  # an exception's end goes through, as it is

    def statistics(self) -> ChannelStatistics:
        s = self._inner.statistics()
        return dataclasses.replace(s, messages_sent=2 * s.messages_sent)

    @property
    def closed(self) -> bool:
        return self._inner.closed


def test_the_asyncio_suite_checks_statistics(unix_url: Callable[[], str]) -> None:
    # The blocking suite checked statistics(); the asyncio one did not, so an asyncio channel
    # counting each message twice passed it.
    real = apair_from_url(unix_url)

    @contextlib.asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[tuple[AioChannel, AioChannel]]:
        async with real(**options) as (a, b):
            yield AioMiscounting(a), AioMiscounting(b)

    caps = lookup("unix").capabilities
    with pytest.raises(ConformanceError, match="messages_sent=10, want 5"):
        asyncio.run(acheck_channel(make, caps, codecs=("bytes",)))


class AioNoneWhenEmpty(AioMiscounting):
    """A real asyncio channel whose recv_nowait() returns None when nothing is there."""

    def statistics(self) -> ChannelStatistics:
        return self._inner.statistics()

    async def recv_nowait(self) -> Any:
        try:
            return await self._inner.recv_nowait()
        except Timeout:
            return None


def test_the_asyncio_suite_checks_recv_nowait(unix_url: Callable[[], str]) -> None:
    real = apair_from_url(unix_url)

    @contextlib.asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[tuple[AioChannel, AioChannel]]:
        async with real(**options) as (a, b):
            yield AioNoneWhenEmpty(a), AioNoneWhenEmpty(b)

    caps = lookup("unix").capabilities
    with pytest.raises(ConformanceError, match="recv_nowait"):
        asyncio.run(acheck_channel(make, caps, codecs=("bytes",)))


class DropsLastOfBatch(Bent):
    """send_many loses the last message of each batch. Its receiver waits 0.2 s, not 10, so
    the test is quick: the suite must still say what went wrong, not raise a bare Timeout."""

    def send_many(self, objs: Any, *, timeout: float | None = None) -> None:
        self._inner.send_many(list(objs)[:-1], timeout=timeout)

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        return self._inner.recv_many(max_messages, timeout=min(timeout or 0.2, 0.2))


def test_messages_lost_by_send_many_are_reported_as_such(unix_url: Callable[[], str]) -> None:
    real = pair_from_url(unix_url)

    @contextlib.contextmanager
    def make(**options: Any) -> Iterator[tuple[Channel, Channel]]:
        with real(**options) as (a, b):
            yield DropsLastOfBatch(a, _same), DropsLastOfBatch(b, _same)

    caps = lookup("unix").capabilities
    with pytest.raises(ConformanceError, match="3 of 4 messages arrived"):
        check_channel(make, caps, codecs=("bytes",))


def _same(obj: Any) -> Any:
    return obj
