"""What the blocking and asyncio drivers share from ``udp/_channel.py``, without sockets:
where ``connect`` binds, how addresses are written, and a listener's table of peers."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from ipcwire._core.url import parse_url
from ipcwire.errors import ConfigurationError
from ipcwire.options import ChannelOptions
from ipcwire.udp._channel import (
    ACCEPT_BACKLOG,
    Address,
    ListenerCore,
    PeerCore,
    address_url,
    connect_addresses,
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


def _listener() -> _Listener:
    url = "udp://127.0.0.1:9"
    return _Listener(ChannelOptions.build(parse_url(url), {}), url, socket.AF_INET)


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
