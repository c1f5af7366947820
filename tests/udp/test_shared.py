"""What the blocking and asyncio drivers share from ``udp/_channel.py``, without sockets:
where ``connect`` binds, how addresses are written, a listener's table of peers, and how a
silent peer ends (``idle_timeout``)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from ipcwire._core.url import parse_url
from ipcwire.errors import ConfigurationError, EndOfChannel
from ipcwire.options import ChannelOptions
from ipcwire.udp._channel import (
    ACCEPT_BACKLOG,
    DEFAULT_IDLE_TIMEOUT,
    Address,
    ListenerCore,
    PeerCore,
    address_url,
    connect_addresses,
    idle_timeout_option,
)


@pytest.mark.parametrize(
    ("url", "bind", "local"),
    [
        ("udp://127.0.0.1:9", None, ("127.0.0.1", 0)),
        ("udp://127.8.9.10:9", None, ("127.0.0.1", 0)),
        ("udp://[::1]:9", None, ("::1", 0)),
        ("udp://192.0.2.1:9", None, ("0.0.0.0", 0)),
        ("udp://[2001:db8::1]:9", None, ("::", 0)),
        ("udp://192.0.2.1:9", "udp://127.0.0.1:5000", ("127.0.0.1", 5000)),
    ],
)
def test_connect_binds_loopback_for_a_loopback_peer_else_any(
    url: str, bind: str | None, local: Address
) -> None:
    kw: dict[str, Any] = {"timeout": 3}
    peer, here = connect_addresses(parse_url(url), bind, kw)
    assert (here.host, here.port) == local
    assert peer.url() == url
    assert kw == {}  # timeout= is accepted and ignored: UDP has no connection step


def test_connect_refuses_unknown_options() -> None:
    with pytest.raises(ConfigurationError):
        connect_addresses(parse_url("udp://127.0.0.1:9"), None, {"colour": "red"})


def test_address_url_brackets_ipv6() -> None:
    assert address_url(("127.0.0.1", 9, "ignored")) == "udp://127.0.0.1:9"
    assert address_url(("::1", 9, 0, 0)) == "udp://[::1]:9"


class _Peer(PeerCore["_Listener"]):
    pass


class _Listener(ListenerCore[_Peer]):
    def _new_peer(self, addr: Address) -> _Peer:
        return _Peer(self, addr)

    def _wake_peer(self, ch: _Peer) -> None:
        self.woken.append(ch)

    woken: list[_Peer]


def _listener(max_peers: int | None = None) -> _Listener:
    url = "udp://127.0.0.1:9"
    opts = ChannelOptions.build(parse_url(url), {})
    lst = _Listener(opts, url, socket.AF_INET, max_peers=max_peers)
    lst.woken = []
    return lst


def test_a_full_table_ends_the_peer_silent_longest_for_a_new_one() -> None:
    lst = _listener(max_peers=2)
    a, b = lst._admit(("127.0.0.1", 1), 0), lst._admit(("127.0.0.1", 2), 0)
    assert a is not None and b is not None
    a._active += 1.0  # b has been silent longer
    c = lst._admit(("127.0.0.1", 3), 0)
    assert c is not None
    assert set(lst._peers) == {("127.0.0.1", 1), ("127.0.0.1", 3)}
    assert lst.woken == [b] and lst.evicted == 1
    with pytest.raises(EndOfChannel, match="max_peers=2"):
        b._idle_end(None)
    assert a._idle_end(None) is not None  # a goes on (until its idle time is over)


def test_listener_admits_new_peers_until_the_backlog_is_full_or_it_closes() -> None:
    lst = _listener()
    ch = lst._admit(("127.0.0.1", 1), 0)
    assert ch is not None
    assert ch.url == "udp://127.0.0.1:9 <- udp://127.0.0.1:1"
    assert lst._peers == {("127.0.0.1", 1): ch}
    assert lst._admit(("127.0.0.1", 2), ACCEPT_BACKLOG) is None
    assert lst.dropped == 1
    assert not lst._stop()  # the peer still uses the socket
    lst._closed = True
    assert lst._admit(("127.0.0.1", 3), 0) is None
    assert lst.dropped == 2
    assert lst._release(ch)  # the last user
    assert not lst._release(ch)  # forgotten once only


def test_the_socket_closes_with_the_listener_when_no_peer_is_left() -> None:
    lst = _listener()
    ch = lst._admit(("127.0.0.1", 1), 0)
    assert ch is not None
    assert not lst._release(ch)  # the listener still uses it
    assert lst._stop()


def test_an_ended_peer_still_uses_the_socket_until_it_closes_once() -> None:
    """A peer that ended idle leaves the table (its address may be admitted again) but keeps
    its use of the socket: its close releases it once, and never the new peer's."""
    lst = _listener()
    addr = ("127.0.0.1", 1)
    old = lst._admit(addr, 0)
    assert old is not None
    old._end()
    assert lst._peers == {}
    new = lst._admit(addr, 0)
    assert new is not None
    assert lst._peers == {addr: new}
    assert not lst._release(old)  # the listener and new still use it
    assert lst._peers == {addr: new}
    assert not lst._release(old)  # once only
    assert not lst._stop()  # new still uses it
    assert lst._release(new)  # the last user


def test_the_listener_closes_before_an_ended_peer() -> None:
    lst = _listener()
    ch = lst._admit(("127.0.0.1", 1), 0)
    assert ch is not None
    ch._end()
    assert not lst._stop()
    assert lst._release(ch)


def test_an_ended_peer_names_the_fix() -> None:
    lst = _listener()
    ch = lst._admit(("127.0.0.1", 1), 0)
    assert ch is not None
    err = ch._end()
    assert ch._end() is err
    assert str(err) == (
        "udp://127.0.0.1:9 <- udp://127.0.0.1:1: nothing came from or went to the peer for "
        "300 s (idle_timeout=300); UDP has no close, so a silent peer ends here. If it sends "
        "again it comes back through accept() as a new channel; raise idle_timeout= (or None) "
        "to keep silent peers"
    )
    with pytest.raises(EndOfChannel):
        ch._idle_end(None)


@pytest.mark.parametrize(
    ("kw", "query", "kept"),
    [
        ({}, "", DEFAULT_IDLE_TIMEOUT),
        ({"idle_timeout": None}, "", None),
        ({"idle_timeout": 1}, "?idle_timeout=5", 1.0),
        ({}, "?idle_timeout=5", 5.0),
        ({}, "?idle_timeout=none", None),
        ({"idle_timeout": 2e9}, "", None),  # longer than any wait: none
    ],
)
def test_idle_timeout_option(kw: dict[str, Any], query: str, kept: float | None) -> None:
    assert idle_timeout_option(parse_url(f"udp://127.0.0.1:9{query}"), dict(kw)) == kept


@pytest.mark.parametrize(
    "value", [0, -1, float("nan"), float("inf"), "0", "x", True, None, [1]], ids=repr
)
def test_bad_idle_timeouts(value: object) -> None:
    kw: dict[str, Any] = {} if value is None else {"idle_timeout": value}
    query = "?idle_timeout=-3" if value is None else ""
    with pytest.raises(ConfigurationError, match=r"idle_timeout=.* for udp://127\.0\.0\.1:9"):
        idle_timeout_option(parse_url(f"udp://127.0.0.1:9{query}"), kw)


def test_idle_timeout_given_as_a_keyword_must_be_a_number() -> None:
    """Only the URL's query is text; a keyword is a number of seconds or None."""
    with pytest.raises(ConfigurationError, match="idle_timeout='5'"):
        idle_timeout_option(parse_url("udp://127.0.0.1:9"), {"idle_timeout": "5"})
    kw: dict[str, Any] = {"idle_timeout": None}
    assert idle_timeout_option(parse_url("udp://127.0.0.1:9?idle_timeout=5"), kw) is None
