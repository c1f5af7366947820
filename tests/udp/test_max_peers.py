"""A listener keeps at most ``max_peers`` peers: a new one ends the channel of the peer
silent longest. UDP has no close, so a client that left is only known by its silence; a
churn probe (1000 clients, one request each, then close) left 973 handler threads (blocking)
or 969 tasks (asyncio) alive in the server until their ``idle_timeout`` (300 s): a service
whose clients come and go faster than that grew without bound."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from tests.udp._idle import channels

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.errors import ConfigurationError, EndOfChannel
from ipcwire.udp._channel import DEFAULT_MAX_PEERS, max_peers_option


def test_serve_holds_at_most_max_peers_handlers_while_clients_come_and_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def echo(ch: Any) -> None:
        for m in ch:
            ch.send(m)

    before = set(threading.enumerate())  # (a count would move as earlier tests' threads end)
    with caplog.at_level(logging.WARNING, logger="ipcwire"):
        lst = ipcwire.listen("udp://127.0.0.1:0", max_peers=4)  # idle_timeout: 300 s
        server = threading.Thread(target=lst.serve, args=(echo,))
        server.start()
        try:
            for i in range(30):
                with ipcwire.connect(lst.url) as c:
                    assert c.request(b"%d" % i, timeout=10) == b"%d" % i
                assert len(channels(lst)) <= 4
            assert lst.evicted == 26  # type: ignore[attr-defined]
            kept = {ch.url for ch in channels(lst).values()}
            for t in threading.enumerate():  # the ended peers' handlers return
                if t.name.startswith(f"ipcwire {lst.url} <- ") and t.name[8:] not in kept:
                    t.join(timeout=10)
                    assert not t.is_alive(), f"{t.name}: its peer ended, its handler did not"
            started = [t for t in threading.enumerate() if t not in before]
            assert len(started) == 1 + 4, started  # serve(), 4 handlers
        finally:
            lst.close()
            server.join(timeout=10)
    assert sum("max_peers" in r.getMessage() for r in caplog.records) == 1  # once, at warning


def test_the_peer_silent_longest_is_the_one_that_ends() -> None:
    with ipcwire.listen("udp://127.0.0.1:0", max_peers=2) as lst:
        a, b, c = (ipcwire.connect(lst.url) for _ in range(3))
        try:
            a.send(b"a1")
            cha = lst.accept(timeout=5)
            assert cha.recv(timeout=5) == b"a1"
            b.send(b"b1")
            chb = lst.accept(timeout=5)
            assert chb.recv(timeout=5) == b"b1"
            a.send(b"a2")  # a spoke last: b is now the one silent longest
            assert cha.recv(timeout=5) == b"a2"
            c.send(b"c1")
            chc = lst.accept(timeout=5)
            assert chc.recv(timeout=5) == b"c1"
            with pytest.raises(EndOfChannel, match=r"max_peers=2 .*silent longest"):
                chb.recv(timeout=5)
            a.send(b"a3")
            assert cha.recv(timeout=5) == b"a3"  # a and c stay
            b.send(b"b2")  # b comes back as a new peer (and a, silent longest now, ends)
            chb2 = lst.accept(timeout=5)
            assert chb2.recv(timeout=5) == b"b2"
            assert lst.evicted == 2  # type: ignore[attr-defined]
            for ch in (cha, chb, chc, chb2):
                ch.close()
        finally:
            for x in (a, b, c):
                x.close()


def test_a_recv_waiting_on_the_evicted_peer_wakes_with_end_of_channel() -> None:
    with (
        ipcwire.listen("udp://127.0.0.1:0", max_peers=1) as lst,
        ipcwire.connect(lst.url) as a,
        ipcwire.connect(lst.url) as b,
    ):
        a.send(b"a1")
        cha = lst.accept(timeout=5)
        assert cha.recv(timeout=5) == b"a1"
        box: list[BaseException] = []
        waiting = threading.Thread(target=lambda: _recv_into(cha, box))
        waiting.start()
        b.send(b"b1")
        chb = lst.accept(timeout=5)  # (this caller reads the socket: a's recv waits)
        waiting.join(timeout=10)
        assert isinstance(box[0], EndOfChannel), box
        assert chb.recv(timeout=5) == b"b1"
        cha.close()
        chb.close()


def _recv_into(ch: ipcwire.Channel, box: list[BaseException]) -> None:
    try:
        ch.recv(timeout=30)
    except BaseException as exc:
        box.append(exc)


def test_asyncio_evicts_and_wakes_the_waiting_recv() -> None:
    async def main() -> None:
        async with await aio.listen("udp://127.0.0.1:0", max_peers=1) as lst:
            a = await aio.connect(lst.url)
            b = await aio.connect(lst.url)
            try:
                await a.send(b"a1")
                cha = await lst.accept(timeout=5)
                assert await cha.recv(timeout=5) == b"a1"
                waiting = asyncio.ensure_future(cha.recv(timeout=30))
                await b.send(b"b1")
                chb = await lst.accept(timeout=5)
                with pytest.raises(EndOfChannel, match="max_peers=1"):
                    await asyncio.wait_for(waiting, 10)
                assert await chb.recv(timeout=5) == b"b1"
                assert lst.evicted == 1  # type: ignore[attr-defined]
                await cha.aclose()
                await chb.aclose()
            finally:
                await a.aclose()
                await b.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("kw", "query", "kept"),
    [
        ({}, "", DEFAULT_MAX_PEERS),
        ({"max_peers": None}, "", None),
        ({"max_peers": 3}, "?max_peers=5", 3),
        ({}, "?max_peers=5", 5),
        ({}, "?max_peers=none", None),
    ],
)
def test_max_peers_option(kw: dict[str, Any], query: str, kept: int | None) -> None:
    assert max_peers_option(parse_url(f"udp://127.0.0.1:9{query}"), dict(kw)) == kept


@pytest.mark.parametrize("value", [0, -1, 2.5, "3", True, [1]], ids=repr)
def test_bad_max_peers(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"max_peers=.* for udp://127\.0\.0\.1:9"):
        max_peers_option(parse_url("udp://127.0.0.1:9"), {"max_peers": value})
    with pytest.raises(ConfigurationError, match=r"max_peers='-3'"):
        max_peers_option(parse_url("udp://127.0.0.1:9?max_peers=-3"), {})
