"""The client's shared steps without a server: what an answer to a post or a poll means
(ClientCore.replied, no_room, polled), connect's setup (dial) and its retry schedule."""

from __future__ import annotations

import httpx
import pytest

from ipcwire._core.url import parse_url
from ipcwire.errors import ConfigurationError, EndOfChannel, FrameTooLarge, RemoteProtocolError
from ipcwire.http._client import ClientCore
from ipcwire.http._connect import Redial, dial
from ipcwire.http._frames import pack_batch
from ipcwire.http._protocol import BATCH_TYPE, PROBLEM_TYPE
from ipcwire.options import ChannelOptions

URL = "http://127.0.0.1:8080/ipc"


def _core(max_frame: int = 1024) -> ClientCore:
    endpoint = parse_url(URL)
    options = ChannelOptions.build(endpoint, {"max_frame": max_frame})
    return ClientCore(options, URL, session=True)


def _resp(status: int, body: bytes = b"", ctype: str | None = None) -> httpx.Response:
    headers = {"content-type": ctype} if ctype is not None else {}
    return httpx.Response(status, content=body, headers=headers)


def test_replied_takes_one_message_or_a_batch() -> None:
    core = _core()
    assert core.replied(_resp(200, b"one")) is False
    assert core.replied(_resp(200, pack_batch([b"a", b"bc"]), BATCH_TYPE)) is False
    assert list(core.inbox) == [b"one", b"a", b"bc"]
    assert core.inbox_bytes == 6
    assert core.ended is None


def test_no_room_is_a_504_problem_only() -> None:
    core = _core()
    assert core.replied(_resp(504, b"{}", PROBLEM_TYPE)) is True
    assert core.replied(_resp(504, b"gateway", "text/plain")) is False  # a proxy's: for posted
    assert core.replied(_resp(204)) is False  # delivered, no reply in time
    assert not core.inbox


def test_a_garbled_answer_ends_the_stream() -> None:
    core = _core(max_frame=4)
    assert core.replied(_resp(200, b"too long")) is False
    assert isinstance(core.ended, FrameTooLarge)
    core = _core()
    assert core.replied(_resp(200, pack_batch([b"abc"])[:-1], BATCH_TYPE)) is False
    assert isinstance(core.ended, RemoteProtocolError)
    core.stream_ended(None)  # the first end stays the one recv raises
    assert isinstance(core.ended, RemoteProtocolError)
    assert core.broken is not None


def test_polled() -> None:
    core = _core()
    core.polled(_resp(204))
    assert not core.inbox and core.ended is None
    core.polled(_resp(200, pack_batch([b"x", b"y"]), BATCH_TYPE))
    assert list(core.inbox) == [b"x", b"y"]
    core.polled(_resp(200, b"\x00\x00"))
    assert isinstance(core.ended, RemoteProtocolError)
    assert not isinstance(core.ended, EndOfChannel)


def test_dial() -> None:
    endpoint = parse_url(URL)
    options = ChannelOptions.build(endpoint, {})
    d = dial(endpoint, options, {}, timeout=None, session=True)
    assert d.core.url == URL
    assert d.peer.address == "127.0.0.1:8080"
    assert d.timeout > 0
    assert dial(endpoint, options, {}, timeout=2.5, session=False).timeout == 2.5
    with pytest.raises(ConfigurationError, match="bogus"):
        dial(endpoint, options, {"bogus": 1}, timeout=None, session=True)


def test_redial() -> None:
    assert Redial(None).delay() is None  # no reconnect=: the first refusal is final
    assert Redial(0).delay() is None
    redial = Redial(60.0)
    delays = [redial.delay() for _ in range(20)]
    assert all(d is not None and 0 < d <= 60.0 for d in delays)
