"""The D-Bus drivers' shared channel state and routing, without a bus: the flow-control
window's edges (a peer past them included), which failure a send reports, and a client's
messages that arrive before its channel is registered (hard to time against a real daemon;
the daemon tests cover the rest)."""

from __future__ import annotations

import pytest
from dbus_fast import Message
from tests.dbus._fakes import FakeChannel, FakeHub

from ipcwire._core.url import parse_url
from ipcwire.dbus._proto import (
    ERROR_CLOSED,
    ERROR_REFUSED,
    WINDOW,
    WINDOW_BYTES,
    close_call,
    deliver_call,
)
from ipcwire.errors import ChannelBroken, EndOfChannel, RemoteProtocolError
from ipcwire.options import ChannelOptions

URL = "dbus://session/org.example.App"
PEER = ":1.5"


def _channel(hub: FakeHub | None = None) -> FakeChannel:
    wire = ChannelOptions.build(parse_url(URL), {}).wire()
    return FakeChannel(hub or FakeHub(), PEER, "/org/example/App", "c1", wire, URL)


def _from_peer(msg: Message, serial: int) -> Message:
    msg.sender = PEER
    msg.serial = serial
    return msg


def test_the_window_counts_messages_and_bytes_and_always_lets_one_go() -> None:
    ch = _channel()
    assert ch._may_send(WINDOW_BYTES * 2)  # nothing in flight: one message may always go
    ch._inflight, ch._inflight_bytes = 1, WINDOW_BYTES - 10
    assert ch._may_send(10)
    assert not ch._may_send(11)
    ch._inflight, ch._inflight_bytes = WINDOW, 0
    assert not ch._may_send(1)


def test_the_first_failed_delivery_is_what_send_raises() -> None:
    ch = _channel()
    ch._inflight, ch._inflight_bytes = 3, 30
    call = _from_peer(deliver_call(PEER, "/p", "c1", b"x"), 1)
    ch._settled(10, None, Message.new_method_return(call))
    assert ch._send_error is None
    ch._settled(10, None, Message.new_error(call, ERROR_CLOSED, "closed"))
    ch._settled(10, ChannelBroken("a later failure"), None)
    assert (ch._inflight, ch._inflight_bytes) == (0, 0)
    with pytest.raises(ChannelBroken, match="not delivered: the peer closed the channel"):
        ch._may_send(1)


def test_a_client_holds_messages_that_arrive_before_its_channel() -> None:
    hub = FakeHub()
    early = _from_peer(deliver_call(":1.1", "/p", "c1", b"first"), 1)
    assert hub.route(early) is True
    assert hub.early == [early]
    assert hub.sent == []  # held, not refused
    ch = _channel(hub)
    hub.register(ch)
    assert hub.route(_from_peer(close_call(":1.1", "/p", "c1"), 2)) is True
    assert ch._next() is early
    with pytest.raises(EndOfChannel):
        ch._next()
    assert hub.route(_from_peer(deliver_call(":1.1", "/p", "c9", b"?"), 3)) is True
    assert [m.error_name for m in hub.sent] == [ERROR_CLOSED]  # no such channel: refused


def _delivers(n: int, chan: str = "c1", size: int = 1) -> list[Message]:
    return [
        _from_peer(deliver_call(":1.1", "/p", chan, i.to_bytes(4, "big") * size), i + 1)
        for i in range(n)
    ]


def test_a_peer_past_the_window_gets_refusals_and_the_reader_an_error_after_the_rest() -> None:
    """A peer that ignores the window (a buggy or hostile one) made the queue grow as long as
    it sent. Now what it sent within the window is received, the rest is refused, and then
    ``recv`` says why."""
    hub = FakeHub()
    ch = _channel(hub)
    hub.register(ch)
    calls = _delivers(WINDOW + 3)
    for call in calls:
        assert hub.route(call) is True
    assert [m.error_name for m in hub.sent] == [ERROR_REFUSED] * 3
    assert [m.reply_serial for m in hub.sent] == [c.serial for c in calls[WINDOW:]]
    assert ch.statistics().buffered_bytes == WINDOW * 4
    assert [ch._next() for _ in range(WINDOW)] == calls[:WINDOW]
    with pytest.raises(RemoteProtocolError, match="window") as err:
        ch._next()
    assert err.value.endpoint == URL and ch.statistics().buffered_bytes == 0
    hub.route(_delivers(1)[0])  # and it stays refused once there is room again
    assert hub.sent[-1].error_name == ERROR_REFUSED


def test_the_window_in_bytes_lets_one_large_message_in_but_nothing_past_it() -> None:
    hub = FakeHub()
    ch = _channel(hub)
    hub.register(ch)
    big = _from_peer(deliver_call(":1.1", "/p", "c1", bytes(WINDOW_BYTES + 1)), 1)
    hub.route(big)  # the queue was empty: one message may always come
    hub.route(_delivers(1)[0])
    assert [m.error_name for m in hub.sent] == [ERROR_REFUSED]
    assert ch._next() is big
    with pytest.raises(RemoteProtocolError):
        ch._next()


def test_what_a_client_holds_before_its_channel_is_bounded_too() -> None:
    """A listener may send a window of messages and its end before the client's channel is
    registered; past that the client held everything a listener sent."""
    hub = FakeHub()
    calls = _delivers(WINDOW + 5)
    for call in calls:
        assert hub.route(call) is True
    assert len(hub.early) == WINDOW + 2
    assert [m.error_name for m in hub.sent] == [ERROR_REFUSED] * 3
    ch = _channel(hub)
    hub.register(ch)  # replayed: the window, then the one that shows the overrun
    assert [m.error_name for m in hub.sent] == [ERROR_REFUSED] * 5
    assert [ch._next() for _ in range(WINDOW)] == calls[:WINDOW]
    with pytest.raises(RemoteProtocolError):
        ch._next()
