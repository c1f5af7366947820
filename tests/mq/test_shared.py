"""What the blocking and asyncio drivers share from ``_client.py`` and ``_session.py``, step by
step without waiting: the reconnect decision, and a listener's handshake with one announced
client."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from ipcwire._core.url import parse_url
from ipcwire.errors import ConnectionRefused
from ipcwire.mq._client import ClientSession, retry_delay
from ipcwire.mq._rendezvous import (
    bind_listener,
    release_rendezvous,
)
from ipcwire.mq._session import (
    Deferred,
    announced,
)
from ipcwire.options import ChannelOptions


def test_retry_delay_gives_up_or_waits_no_longer_than_is_left() -> None:
    exc = ConnectionRefused("nothing is listening at mq:///x")
    with pytest.raises(ConnectionRefused) as info:
        retry_delay(exc, None, 100.0, 100.0, iter([0.5]))
    assert info.value is exc  # not reconnecting: the caller's own error
    with pytest.raises(ConnectionRefused, match=r"kept trying for 2\.0 s") as info:
        retry_delay(exc, 2.0, 100.0, 102.0, iter([0.5]))
    assert info.value.__cause__ is exc
    assert retry_delay(exc, 2.0, 100.0, 100.5, iter([0.5])) == 0.5
    assert retry_delay(exc, 2.0, 100.0, 101.9, iter([0.5])) == pytest.approx(0.1)


@pytest.mark.parametrize("client_answers", ["proof", "data"])
def test_a_listener_session_opens_or_refuses_one_step_at_a_time(
    mq_url: Callable[..., str], caplog: pytest.LogCaptureFixture, client_answers: str
) -> None:
    url = mq_url()
    endpoint = parse_url(url)
    options = ChannelOptions.build(endpoint, {"token": "t"})  # a token: two client messages
    caplog.set_level(logging.WARNING, logger="ipcwire")
    q, lock = bind_listener(endpoint, {}, mode=0o600, backlog=None)
    try:
        client = ClientSession(q.name, options, maxmsg=None, msgsize=None, mode=0o600)
        try:
            assert q.try_send(client.hello(), 0)
            [s] = announced(q, options, Deferred())
            try:
                assert not s.done
                assert s.advance(url) is False  # the client has not answered yet
                challenge = client.dn.try_recv()
                assert challenge is not None
                if client_answers == "proof":
                    assert client.feed(*challenge) is False  # sends the client's proof
                    assert s.advance(url) is True
                    assert "refused" not in caplog.text
                else:
                    assert client.up.try_send(b"data", 1)
                    assert s.advance(url) is None
                    assert "refused client pid" in caplog.text
                    assert "data before finishing the handshake" in caplog.text
            finally:
                s.close()
        finally:
            client.abort()
    finally:
        release_rendezvous(q, lock, q.name, options, unlink=True)
