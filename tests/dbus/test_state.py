"""The D-Bus drivers' shared channel state and routing, without a bus: the flow-control
window's edges, which failure a send reports, and a client's messages that arrive before its
channel is registered (hard to time against a real daemon; the daemon tests cover the rest)."""

from __future__ import annotations

import pytest
from dbus_fast import Message
from tests.dbus._fakes import FakeChannel, FakeHub

from ipcwire._core.url import parse_url
from ipcwire.dbus._proto import ERROR_CLOSED, WINDOW, WINDOW_BYTES, close_call, deliver_call
from ipcwire.errors import ChannelBroken, EndOfChannel
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
