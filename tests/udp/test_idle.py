"""A listener's silent peers end (``idle_timeout=``), blocking API; and the option itself.

UDP has no close, so a listener kept every peer that ever sent it a datagram, and ``serve()``
a thread for each, for ever. How the waits here end: tests/udp/_idle.py.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import pytest
from tests._proc import wait_until
from tests.udp._idle import GAP, IDLE, SEND_IDLE, channels, idle_clock

import ipcwire
from ipcwire import aio, udp
from ipcwire.errors import ConfigurationError, EndOfChannel, Timeout
from ipcwire.udp import aio as udp_aio


def test_serve_leaves_no_thread_per_client_that_came_and_went() -> None:
    """50 clients that each did one request and closed left 50 threads and peer channels in
    the server for ever (UDP cannot tell that a client left); their handlers now end."""

    def echo(ch: Any) -> None:
        for m in ch:
            ch.send(m)

    before = set(threading.enumerate())  # (a count would move as earlier tests' threads end)
    lst = ipcwire.listen("udp://127.0.0.1:0", idle_timeout=IDLE)
    server = threading.Thread(target=lst.serve, args=(echo,))
    server.start()
    for i in range(50):
        with ipcwire.connect(lst.url) as c:
            assert c.request(b"%d" % i, timeout=10) == b"%d" % i
    peers = [t for t in threading.enumerate() if t.name.startswith(f"ipcwire {lst.url} <- ")]
    for t in peers:
        t.join(timeout=30)
        assert not t.is_alive()
    assert [t for t in threading.enumerate() if t not in before] == [server]  # serve()
    assert channels(lst) == {}
    assert lst._users == 1  # type: ignore[attr-defined]
    lst.close()
    server.join(timeout=10)
    assert not server.is_alive()
    assert lst._io.closed  # type: ignore[attr-defined]
    assert [t for t in threading.enumerate() if t not in before] == []


def test_a_silent_peer_ends_and_comes_back_through_accept() -> None:
    with (
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=IDLE) as lst,
        ipcwire.connect(lst.url) as c,
    ):
        c.send(b"1")
        ch = lst.accept(timeout=5)
        assert ch.recv(timeout=5) == b"1"
        start = time.monotonic()
        with pytest.raises(EndOfChannel) as info:
            ch.recv()  # no timeout: the idle time ends it
        assert time.monotonic() - start < 10
        text = str(info.value)
        assert ch.url in text
        assert "nothing came from or went to the peer for 0.2 s (idle_timeout=0.2)" in text
        assert "UDP has no close" in text and "accept()" in text and "idle_timeout=" in text
        assert info.value.endpoint == ch.url
        with pytest.raises(EndOfChannel):
            ch.recv(timeout=0)  # and again, at once
        assert list(ch) == []
        assert channels(lst) == {}  # forgotten for routing
        ch.send(b"late reply")  # half closed: replies still go to the address
        assert c.recv(timeout=5) == b"late reply"
        c.send(b"2")  # the same address again: a new peer
        again = lst.accept(timeout=5)
        assert again is not ch
        assert again.peer == ch.peer
        assert again.recv(timeout=5) == b"2"
        with pytest.raises(EndOfChannel):
            ch.recv(timeout=0)
        ch.close()
        again.close()


def test_messages_queued_before_the_end_are_delivered() -> None:
    with (
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=IDLE) as lst,
        ipcwire.connect(lst.url) as a,
        ipcwire.connect(lst.url) as b,
    ):
        for m in (b"1", b"2", b"3"):
            a.send(m)
        b.send(b"b")  # sorted after a's: b's idle time ends after a's
        ch_a = lst.accept(timeout=5)
        ch_b = lst.accept(timeout=5)
        assert ch_b.recv(timeout=5) == b"b"
        with pytest.raises(EndOfChannel):
            ch_b.recv(timeout=30)
        assert [ch_a.recv(timeout=0) for _ in range(3)] == [b"1", b"2", b"3"]
        with pytest.raises(EndOfChannel):
            ch_a.recv(timeout=0)
        ch_a.close()
        ch_b.close()


def test_a_datagram_the_kernel_holds_is_read_before_the_peer_is_found_idle() -> None:
    """Nobody reads the socket while the peer's next datagram waits there past the idle
    time: the recv reads it, instead of ending the channel and handing the datagram to a new
    one."""
    with (
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=IDLE) as lst,
        ipcwire.connect(lst.url) as c,
    ):
        c.send(b"1")
        ch = lst.accept(timeout=5)
        assert ch.recv(timeout=5) == b"1"
        c.send(b"2")  # stays in the kernel: nobody reads this listener's socket
        idle_clock()
        assert ch.recv(timeout=0) == b"2"
        with pytest.raises(EndOfChannel):
            ch.recv(timeout=30)
        ch.close()


def test_a_send_while_a_recv_waits_puts_its_end_off() -> None:
    with (
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=SEND_IDLE) as lst,
        ipcwire.connect(lst.url) as c,
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=SEND_IDLE) as clock,
        ipcwire.connect(clock.url) as tick,
    ):
        c.send(b"1")
        ch = lst.accept(timeout=5)
        assert ch.recv(timeout=5) == b"1"
        got: list[BaseException] = []

        def wait() -> None:
            try:
                ch.recv()
            except BaseException as exc:
                got.append(exc)

        t = threading.Thread(target=wait)
        t.start()
        assert wait_until(lambda: lst._reading)  # type: ignore[attr-defined]
        with pytest.raises(Timeout):
            c.recv(timeout=GAP)
        tick.send(b"t")
        with clock.accept(timeout=5) as ticker:
            assert ticker.recv(timeout=5) == b"t"
            with pytest.raises(Timeout):
                c.recv(timeout=GAP)
            ch.send(b"ping")  # activity while the recv waits
            with pytest.raises(EndOfChannel):
                ticker.recv(timeout=30)  # ch's first idle end has passed
        assert t.is_alive() and got == []
        t.join(timeout=30)
        assert not t.is_alive()
        assert [type(e) for e in got] == [EndOfChannel]
        assert c.recv(timeout=5) == b"ping"
        ch.close()


def test_datagrams_from_the_peer_keep_it() -> None:
    idle = 1.0  # ten times the spacing: the loop may stall for most of a second on a busy machine
    with (
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=idle) as lst,
        ipcwire.connect(lst.url) as c,
    ):
        c.send(b"0")
        ch = lst.accept(timeout=5)
        assert ch.recv(timeout=5) == b"0"
        start = time.monotonic()
        n = 1
        while time.monotonic() - start < 1.5 * idle:
            with pytest.raises(Timeout):
                c.recv(timeout=0.1)  # spaces the datagrams
            c.send(b"%d" % n)
            assert ch.recv(timeout=5) == b"%d" % n
            n += 1
        with pytest.raises(Timeout):
            ch.recv(timeout=0.05)  # the last datagram came just now
        assert channels(lst)[ch.addr] is ch  # type: ignore[attr-defined]
        ch.close()


def test_a_short_timeout_is_still_a_timeout() -> None:
    idle = 1.0
    with (
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=idle) as lst,
        ipcwire.connect(lst.url) as c,
    ):
        c.send(b"1")
        ch = lst.accept(timeout=5)
        assert ch.recv(timeout=5) == b"1"
        with pytest.raises(Timeout):
            ch.recv(timeout=0.05)  # shorter than the idle time left
        with pytest.raises(Timeout):
            ch.recv(timeout=0)
        start = time.monotonic()
        with pytest.raises(EndOfChannel):
            ch.recv(timeout=30)  # the idle time ends first
        assert time.monotonic() - start < 30
        ch.close()


def test_sending_keeps_a_peer_and_only_a_recv_ends_it() -> None:
    """A handler that only sends (each recv shorter than the idle time) outlives the idle
    time; a channel nobody receives on is never ended, whatever the time."""
    idle = 1.0  # ten times the spacing: the loop may stall for most of a second on a busy machine
    with (
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=idle) as lst,
        ipcwire.connect(lst.url) as c,
        ipcwire.connect(lst.url) as other,
    ):
        c.send(b"hello")
        ch = lst.accept(timeout=5)
        assert ch.recv(timeout=5) == b"hello"
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < 1.5 * idle:
            with pytest.raises(Timeout):
                ch.recv(timeout=0.1)
            ch.send(b"%d" % n)
            n += 1
        assert [c.recv(timeout=5) for _ in range(n)] == [b"%d" % i for i in range(n)]
        other.send(b"x")  # a peer admitted after ch's last send: its end is the clock
        clock = lst.accept(timeout=5)
        assert clock.recv(timeout=5) == b"x"
        with pytest.raises(EndOfChannel):
            clock.recv(timeout=30)
        assert channels(lst)[ch.addr] is ch  # type: ignore[attr-defined]
        c.send(b"still mine")
        assert ch.recv(timeout=5) == b"still mine"
        ch.close()
        clock.close()


def test_the_socket_closes_when_an_ended_channel_closes_after_the_listener() -> None:
    """An ended channel is no longer in the listener's table but still uses the socket: the
    socket must close when it closes (it stayed open for ever), not before."""
    lst = ipcwire.listen("udp://127.0.0.1:0", idle_timeout=IDLE)
    sock = lst._io.sock  # type: ignore[attr-defined]
    with ipcwire.connect(lst.url) as c:
        c.send(b"1")
        ch = lst.accept(timeout=5)
        assert ch.recv(timeout=5) == b"1"
        with pytest.raises(EndOfChannel):
            ch.recv(timeout=30)
        lst.close()
        assert sock.fileno() >= 0  # the ended channel still uses it
        ch.send(b"reply")
        assert c.recv(timeout=5) == b"reply"
        ch.close()
        assert sock.fileno() == -1
        ch.close()  # idempotent


def test_an_ended_channel_closed_after_a_new_peer_at_its_address_leaves_that_one_alone() -> None:
    lst = ipcwire.listen("udp://127.0.0.1:0", idle_timeout=IDLE)
    sock = lst._io.sock  # type: ignore[attr-defined]
    with ipcwire.connect(lst.url) as c:
        c.send(b"1")
        old = lst.accept(timeout=5)
        assert old.recv(timeout=5) == b"1"
        with pytest.raises(EndOfChannel):
            old.recv(timeout=30)
        c.send(b"2")
        new = lst.accept(timeout=5)
        assert new.recv(timeout=5) == b"2"
        old.close()
        assert list(channels(lst).values()) == [new]
        c.send(b"3")
        assert new.recv(timeout=5) == b"3"
        new.send(b"r")
        assert c.recv(timeout=5) == b"r"
        lst.close()
        assert sock.fileno() >= 0  # new still uses it
        new.close()
        assert sock.fileno() == -1


# -- the option --------------------------------------------------------------------------------
BAD = [0, -1, 0.0, math.nan, math.inf, -math.inf, "soon", True, [1]]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_bad_idle_timeouts_are_refused_naming_the_url(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"idle_timeout=.* for udp://127\.0\.0\.1:0"):
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=value)

    async def main() -> None:
        with pytest.raises(ConfigurationError, match=r"idle_timeout=.* udp://127\.0\.0\.1:0"):
            await aio.listen("udp://127.0.0.1:0", idle_timeout=value)

    asyncio.run(main())


def test_idle_timeout_values_and_where_it_is_taken() -> None:
    with ipcwire.listen("udp://127.0.0.1:0") as lst:
        assert lst.idle_timeout == 300.0  # type: ignore[attr-defined]
    for given, kept in ((None, None), (2, 2.0), (0.25, 0.25), (1e12, None)):
        with ipcwire.listen("udp://127.0.0.1:0", idle_timeout=given) as lst:
            assert lst.idle_timeout == kept  # type: ignore[attr-defined]
    for query, kept in (("0.5", 0.5), ("none", None), ("None", None)):
        with ipcwire.listen(f"udp://127.0.0.1:0?idle_timeout={query}") as lst:
            assert lst.idle_timeout == kept  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="idle_timeout='nan'"):
        ipcwire.listen("udp://127.0.0.1:0?idle_timeout=nan")
    with pytest.raises(ConfigurationError, match="unknown option"):
        ipcwire.listen("udp://127.0.0.1:0", colour="red")
    # not listeners: the existing unknown-option errors
    with pytest.raises(ConfigurationError, match=r"unknown option.* idle_timeout"):
        ipcwire.connect("udp://127.0.0.1:9", idle_timeout=1)
    with pytest.raises(TypeError, match="idle_timeout"):
        udp.bind(idle_timeout=1)  # type: ignore[call-arg]

    async def main() -> None:
        async with await aio.listen("udp://127.0.0.1:0", idle_timeout=None) as alst:
            assert alst.idle_timeout is None  # type: ignore[attr-defined]
        with pytest.raises(ConfigurationError, match=r"unknown option.* idle_timeout"):
            await aio.connect("udp://127.0.0.1:9", idle_timeout=1)
        with pytest.raises(ConfigurationError, match=r"unknown option.* idle_timeout"):
            await udp_aio.bind(idle_timeout=1)  # (it took any option and ignored it)

    asyncio.run(main())


def test_without_idle_timeout_a_silent_peer_stays() -> None:
    with (
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=None) as lst,
        ipcwire.connect(lst.url) as c,
    ):
        c.send(b"1")
        ch = lst.accept(timeout=5)
        assert ch.recv(timeout=5) == b"1"
        idle_clock()
        with pytest.raises(Timeout):
            ch.recv(timeout=0.05)
        c.send(b"2")
        assert ch.recv(timeout=5) == b"2"
        ch.close()


def test_send_to_and_pair_refuse_an_unknown_option() -> None:
    with pytest.raises(ConfigurationError, match="timeot"):
        udp.send_to("udp://127.0.0.1:9", b"x", timeot=1)
    with pytest.raises(ConfigurationError, match="idle_timeout"):
        udp.pair(idle_timeout=1)


def test_asyncio_pair_refuses_an_unknown_option() -> None:
    async def main() -> None:
        with pytest.raises(ConfigurationError, match="idle_timeout"):
            await udp_aio.pair(idle_timeout=1)

    asyncio.run(main())
