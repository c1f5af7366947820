"""An HTTP listener keeps at most ``max_sessions`` client channels: a new one ends the one idle
longest. A client killed after only making requests never sends its DELETE, so before this its
session, server channel and ``serve()`` handler stayed for ``session_timeout`` (300 s): a churn
of such clients grew the server without bound (the first test shows it with the default cap).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import httpx
import pytest
from tests._proc import kill9, python, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel
from ipcwire.errors import (
    ChannelBroken,
    ConfigurationError,
    EndOfChannel,
    ResourceExhausted,
    Timeout,
)
from ipcwire.http._protocol import PROTOCOL_VERSION


def _open(http: httpx.Client, url: str) -> str:
    """Open a channel as ipcwire's client does (``POST {prefix}/channels``), and never close
    it: what a client killed after its requests leaves behind."""
    r = http.post(f"{url}/channels", json={"ipcwire": PROTOCOL_VERSION, "codec": "json"})
    assert r.status_code == 201, r.text
    sid: str = r.json()["channel"]
    return sid


def _post(http: httpx.Client, url: str, sid: str, msg: Any) -> None:
    """Send one message on a channel (answered 204 once the server channel has it)."""
    r = http.post(f"{url}/channels/{sid}/messages", json=msg)
    assert r.status_code == 204, r.text


def _ended(ch: Channel) -> bool:
    """Whether a server channel has ended (nothing is queued on the ones here)."""
    try:
        ch.recv(timeout=0)
    except EndOfChannel:
        return True
    except Timeout:
        return False
    raise AssertionError("a message was queued")


def test_clients_that_never_close_do_not_lock_out_new_ones_at_the_default_cap() -> None:
    """1024 + 6 clients that open a channel and vanish: before, the 1025th and every later
    one got 503 (busy, max_channels=1024) until the vanished ones expired (300 s); now each
    new one ends the channel idle longest, so the server holds 1024 and new clients get in."""
    extra = 6
    with ipcwire.listen("http://127.0.0.1:0/api", codec="json") as lst, httpx.Client() as http:
        for _ in range(1024 + extra):
            _open(http, lst.url)
        chans = [lst.accept(timeout=5) for _ in range(1024 + extra)]
        ended = [i for i, ch in enumerate(chans) if _ended(ch)]
        assert ended == list(range(extra))  # the oldest ones, and only as many as needed
        assert lst.evicted == extra  # type: ignore[attr-defined]
        for ch in chans:
            ch.close()


def _counting_handler(live: list[int], cond: threading.Condition) -> Any:
    """An echo handler for ``serve()`` that keeps ``live[0]``: how many handlers run."""

    def handler(ch: Channel) -> None:
        with cond:
            live[0] += 1
        try:
            for m in ch:
                ch.send(m)
        finally:
            with cond:
                live[0] -= 1
                cond.notify_all()

    return handler


def test_serve_holds_at_most_max_sessions_handlers_while_clients_come_and_go() -> None:
    """Clients that make one request and vanish (no close): the handlers of the channels
    ended for newer ones return, so serve() never holds more than max_sessions of them."""
    live = [0]
    cond = threading.Condition()
    lst = ipcwire.listen("http://127.0.0.1:0/api", codec="json", max_sessions=3)
    server = threading.Thread(target=lst.serve, args=(_counting_handler(live, cond),))
    server.start()
    gone = []
    try:
        for i in range(10):
            c = ipcwire.connect(lst.url, codec="json")
            gone.append(c)  # never closed while the test looks: as if killed
            assert c.request(i, timeout=5) == i
            with cond:  # the ended channels' handlers return (their recv wakes)
                assert cond.wait_for(lambda: live[0] <= 3, timeout=5), live
        assert lst.evicted == 7  # type: ignore[attr-defined]
    finally:
        lst.close()
        server.join(timeout=10)
        for c in gone:
            c.close()


def test_clients_killed_after_a_request_are_ended_for_new_ones() -> None:
    """Real client processes, killed (-9) after one request: their channels end for new
    clients instead of staying for session_timeout."""
    live = [0]
    cond = threading.Condition()
    with ipcwire.listen("http://127.0.0.1:0/api", codec="json", max_sessions=2) as lst:
        server = threading.Thread(target=lst.serve, args=(_counting_handler(live, cond),))
        server.start()
        code = f"""
            import sys, ipcwire
            ch = ipcwire.connect({lst.url!r}, codec="json")
            print(ch.request("hi", timeout=10), flush=True)
            sys.stdin.read()
        """
        for _ in range(3):  # one after the other: a churn of short-lived clients
            kid = python(code)
            try:
                assert wait_line(kid) == "hi"
            finally:
                kill9(kid)
        assert lst.evicted == 1  # type: ignore[attr-defined]
        with ipcwire.connect(lst.url, codec="json") as c:  # ends another dead one
            assert c.request("new", timeout=5) == "new"
            assert lst.evicted == 2  # type: ignore[attr-defined]
            with cond:
                assert cond.wait_for(lambda: live[0] <= 2, timeout=5), live
        lst.close()
        server.join(timeout=10)


def _handle(ch: Channel, ends: dict[int, BaseException], i: int) -> None:
    """Echo until the channel ends; record how it ended."""
    try:
        while True:
            ch.send(ch.recv())
    except BaseException as exc:
        ends[i] = exc
    finally:
        ch.close()


def test_the_channel_idle_longest_ends_after_its_queued_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="ipcwire"),
        ipcwire.listen("http://127.0.0.1:0/api", codec="json", max_sessions=3) as lst,
        httpx.Client() as http,
    ):
        # the first client opens a channel, sends two messages, and is killed (no DELETE)
        sid = _open(http, lst.url)
        first = lst.accept(timeout=5)
        _post(http, lst.url, sid, "queued 1")
        _post(http, lst.url, sid, "queued 2")
        ends: dict[int, BaseException] = {}
        clients = [ipcwire.connect(lst.url, codec="json") for _ in range(2)]
        threads = []
        try:
            for i, c in enumerate(clients):
                ch = lst.accept(timeout=5)
                t = threading.Thread(target=_handle, args=(ch, ends, i))
                t.start()
                threads.append(t)
                assert c.request(f"hello {i}", timeout=5) == f"hello {i}"
            # a fourth client: the first channel (idle longest) ends for it
            clients.append(ipcwire.connect(lst.url, codec="json"))
            assert lst.evicted == 1  # type: ignore[attr-defined]
            assert first.recv(timeout=5) == "queued 1"  # what was queued is received first
            assert first.recv(timeout=5) == "queued 2"
            with pytest.raises(EndOfChannel, match=r"max_sessions=3 .*idle longest") as info:
                first.recv(timeout=5)
            assert "larger max_sessions=" in str(info.value)
            with pytest.raises(ChannelBroken, match="max_sessions=3"):
                first.send("to nobody")
            # its client's next request: the same answer as for an expired channel
            r = http.post(f"{lst.url}/channels/{sid}", json="again")
            assert r.status_code == 404 and "max_sessions=3" in r.text
            # the others still work, the fourth too
            ch = lst.accept(timeout=5)
            t = threading.Thread(target=_handle, args=(ch, ends, 2))
            t.start()
            threads.append(t)
            for i, c in enumerate(clients):
                assert c.request(i, timeout=5) == i
            assert not ends
        finally:
            for c in clients:
                c.close()
            for t in threads:
                t.join(timeout=10)
        first.close()
    assert all(isinstance(e, EndOfChannel) for e in ends.values()), ends
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "max_sessions" in warned[0].getMessage()  # once per listener


def test_a_waiting_recv_wakes_and_the_evicted_client_gets_a_clear_error() -> None:
    with (
        ipcwire.listen("http://127.0.0.1:0/api", codec="json", max_sessions=1) as lst,
        ipcwire.connect(lst.url, codec="json") as a,
    ):
        cha = lst.accept(timeout=5)
        ends: dict[int, BaseException] = {}
        handler = threading.Thread(target=_handle, args=(cha, ends, 0))
        handler.start()
        assert a.request("ping", timeout=5) == "ping"  # the handler now waits in recv()
        with ipcwire.connect(lst.url, codec="json") as b:
            handler.join(timeout=10)
            assert isinstance(ends[0], EndOfChannel) and "max_sessions=1" in str(ends[0])
            with pytest.raises(ChannelBroken, match=r"404.*max_sessions=1.*connect again"):
                a.request("ping", timeout=5)
            chb = lst.accept(timeout=5)
            b.send("b")
            assert chb.recv(timeout=5) == "b"
            chb.close()


def test_a_channel_with_a_request_being_handled_is_not_ended() -> None:
    with ipcwire.listen("http://127.0.0.1:0/api", codec="json", max_sessions=2) as lst:
        busy = ipcwire.connect(lst.url, codec="json")  # the oldest
        ch_busy = lst.accept(timeout=5)
        replies: list[Any] = []
        asking = threading.Thread(target=lambda: replies.append(busy.request("slow", timeout=10)))
        asking.start()
        assert ch_busy.recv(timeout=5) == "slow"  # its request is being handled now
        idle = ipcwire.connect(lst.url, codec="json")
        ch_idle = lst.accept(timeout=5)
        idle.send("hi")
        assert ch_idle.recv(timeout=5) == "hi"
        new = ipcwire.connect(lst.url, codec="json")  # ends the idle one, not the busy one
        ch_new = lst.accept(timeout=5)
        with pytest.raises(EndOfChannel, match="max_sessions=2"):
            ch_idle.recv(timeout=5)
        ch_busy.send("done")
        asking.join(timeout=10)
        assert replies == ["done"]
        # every channel busy: a new client is refused, nobody is ended
        both = [
            threading.Thread(target=lambda c=c: replies.append(c.request("slow", timeout=10)))
            for c in (busy, new)
        ]
        for th, sch in zip(both, (ch_busy, ch_new), strict=True):
            th.start()
            assert sch.recv(timeout=5) == "slow"
        with pytest.raises(ResourceExhausted, match=r"503.*max_sessions=2.*larger max_sessions="):
            ipcwire.connect(lst.url, codec="json")
        for ch in (ch_busy, ch_new):
            ch.send("done again")
        for th in both:
            th.join(timeout=10)
        assert replies == ["done", "done again", "done again"]
        assert lst.evicted == 1  # type: ignore[attr-defined]
        for x in (busy, idle, new, ch_busy, ch_idle, ch_new):
            x.close()


def test_asyncio_listener_ends_the_channel_idle_longest() -> None:
    async def main() -> None:
        async with (
            await aio.listen("http://127.0.0.1:0/api", codec="json", max_sessions=2) as lst,
            httpx.AsyncClient() as http,
        ):
            # x: opened, sent a message the application has not received, vanished
            r = await http.post(
                f"{lst.url}/channels", json={"ipcwire": PROTOCOL_VERSION, "codec": "json"}
            )
            sid = r.json()["channel"]
            chx = await lst.accept(timeout=5)
            r = await http.post(f"{lst.url}/channels/{sid}/messages", json="x1")
            assert r.status_code == 204
            # y: a client whose handler waits in recv() after one round trip
            y = await aio.connect(lst.url, codec="json")
            chy = await lst.accept(timeout=5)
            asked = asyncio.ensure_future(y.request("y1", timeout=5))
            assert await chy.recv(timeout=5) == "y1"
            await chy.send("r1")
            assert await asked == "r1"
            waiting = asyncio.ensure_future(chy.recv(timeout=30))
            z = await aio.connect(lst.url, codec="json")  # x is idle longest: it ends
            w = None
            try:
                assert lst.evicted == 1  # type: ignore[attr-defined]
                assert await chx.recv(timeout=5) == "x1"  # what was queued first
                with pytest.raises(EndOfChannel, match=r"max_sessions=2 .*idle longest"):
                    await chx.recv(timeout=5)
                assert not waiting.done()
                w = await aio.connect(lst.url, codec="json")  # now y is idle longest
                with pytest.raises(EndOfChannel, match="max_sessions=2"):
                    await asyncio.wait_for(waiting, 10)  # the waiting recv wakes
                with pytest.raises(ChannelBroken, match=r"404.*max_sessions=2"):
                    await y.request("again", timeout=5)
                assert lst.evicted == 2  # type: ignore[attr-defined]
                for c in (z, w):  # the newer ones work
                    chn = await lst.accept(timeout=5)
                    await c.send("hi")
                    assert await chn.recv(timeout=5) == "hi"
                    await chn.aclose()
            finally:
                for end in (y, z, w):
                    if end is not None:
                        await end.aclose()
            for ch in (chx, chy):
                await ch.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("value", [0, -1, 2.5, "10", True])
def test_bad_max_sessions_is_a_configuration_error(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"max_sessions=.* for http://127\.0\.0\.1:0/api"):
        ipcwire.listen("http://127.0.0.1:0/api", max_sessions=value)

    async def main() -> None:
        with pytest.raises(ConfigurationError, match=r"max_sessions=.*whole number"):
            await aio.listen("http://127.0.0.1:0/api", max_sessions=value)

    asyncio.run(main())


def test_max_sessions_none_keeps_every_channel() -> None:
    with (
        ipcwire.listen("http://127.0.0.1:0/api", codec="json", max_sessions=None) as lst,
        httpx.Client() as h,
    ):
        for _ in range(3):
            _open(h, lst.url)
        chans = [lst.accept(timeout=5) for _ in range(3)]
        assert not any(_ended(ch) for ch in chans)
        assert lst.evicted == 0  # type: ignore[attr-defined]
        for ch in chans:
            ch.close()
