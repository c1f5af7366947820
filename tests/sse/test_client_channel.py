"""The decisions both SSE client drivers share (ipcwire.sse._client_channel), with a clock and
bytes alone: the reconnection schedule, what a connection error means, what a read's bytes
do. Then the asyncio client's TLS failure over a real socket (more in test_tls_refusal.py)."""

from __future__ import annotations

import asyncio
import errno
import ssl
from pathlib import Path

import pytest
from tests.ws._tls import tls_contexts

from ipcwire import aio
from ipcwire._core.codecs import get_codec
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    Timeout,
)
from ipcwire.options import ChannelOptions
from ipcwire.sse._client import ClientCore, SseAddress
from ipcwire.sse._client_channel import ClientChannelBase

URL = "sse+http://127.0.0.1:1/events"
SID = "ab" * 16
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"X-Ipcwire-Stream: " + SID.encode() + b"\r\n\r\n"
)


class Channel(ClientChannelBase):
    """The shared part alone: the connection is a flag, the clock is set by hand."""

    def __init__(self, *, retry: float = 0.5, retry_for: float = 10.0) -> None:
        options = ChannelOptions(url=URL, codec=get_codec("bytes", authenticated=False))
        core = ClientCore(
            options,
            SseAddress(False, "127.0.0.1", 1, "/events"),
            headers=None,
            last_event_id=None,
            allow_gaps=False,
            retry=retry,
            retry_for=retry_for,
        )
        self.now = 100.0
        super().__init__(
            core, connect_timeout=3.0, ssl=None, server_hostname=None, clock=lambda: self.now
        )
        self.connected = True
        self.sent = 0  # events the test's server sent

    def _drop(self) -> None:
        self.connected = False


def test_the_reconnection_schedule() -> None:
    ch = Channel(retry=0.5, retry_for=10.0)
    ch._connection_lost(None)
    assert not ch.connected
    assert ch._attempt_wait(100.0, None, None) == 0.5  # the retry delay, first
    assert ch._attempt_wait(100.2, 100.3, 1.0) == pytest.approx(0.1)  # not past the deadline
    with pytest.raises(Timeout, match=r"within 1.0 s \(reconnecting\)"):
        ch._attempt_wait(100.3, 100.3, 1.0)
    assert ch._attempt_wait(100.5, None, None) == 0.0  # due: attempt now
    assert ch._attempt_deadline(100.5, None) == 103.5  # within connect_timeout
    assert ch._attempt_deadline(100.5, 101.0) == 101.0  # or the caller's deadline
    assert ch._attempt_deadline(100.5, 100.0) == pytest.approx(100.501)  # never none at all
    ch._attempt_failed(Timeout("no answer", endpoint=URL))
    wait = ch._attempt_wait(100.5, None, None)  # then backoff with jitter
    assert 0.5 <= wait <= 1.0
    assert ch._attempt_wait(110.6, None, None) == 0.0  # due before retry_for ran out
    ch._attempt_failed(Timeout("no answer", endpoint=URL))
    with pytest.raises(ChannelBroken, match=r"within 10.0 s \(retry_for=\): no answer"):
        ch._attempt_wait(110.6, None, None)
    assert ch._core.final is not None  # broken for good


def test_a_retry_longer_than_retry_for_is_cut_to_one_last_attempt() -> None:
    ch = Channel(retry=3600.0, retry_for=10.0)
    ch._connection_lost(None)
    assert ch._attempt_wait(100.0, None, None) == 10.0  # not an hour, then giving up untried
    assert ch._attempt_wait(110.2, None, None) == 0.0  # woken a little late: still attempts
    ch._attempt_failed(Timeout("no answer", endpoint=URL))
    with pytest.raises(ChannelBroken, match="retry_for"):
        ch._attempt_wait(110.3, None, None)


def answered_and_closed(ch: Channel, events: int = 1) -> None:
    """A connection attempt that succeeded, ``events`` new events, then the server closed
    the connection."""
    answer = ch._answer(bytearray(), HEAD)
    assert answer is not None and answer[0]
    ch._opened(None, answer[1])
    for _ in range(events):
        ch.sent += 1
        ch._received(b"id: " + SID.encode() + b"-%d\ndata: aGk=\n\n" % ch.sent)
    ch._connection_lost(None)


def test_only_progress_resets_the_backoff_and_retry_for() -> None:
    """A server that answers 200 and closes before any event: each answer reset the backoff
    and the retry_for clock, so it was reconnected at the first delay, for ever. Now such a
    connection is a failed attempt (its own time aside); a message resets both."""
    ch = Channel(retry=0.5, retry_for=10.0)
    ch._connection_lost(None)  # at 100
    assert ch._attempt_wait(100.0, None, None) == 0.5
    ch.now = 100.5
    assert ch._attempt_wait(100.5, None, None) == 0.0
    answered_and_closed(ch, events=0)  # open for no time at 100.5
    assert 0.5 <= ch._attempt_wait(100.5, None, None) <= 1.0  # backing off, not 0.5 again
    ch.now = 104.0
    assert ch._attempt_wait(104.0, None, None) == 0.0
    answer = ch._answer(bytearray(), HEAD)
    assert answer is not None
    ch._opened(None, answer[1])
    ch.now = 200.0  # open (quiet) for 96 s: that is not time spent reconnecting
    ch._connection_lost(None)
    assert ch._lost_at == pytest.approx(196.0)  # 4 s of the 10 spent
    assert 1.0 <= ch._attempt_wait(200.0, None, None) <= 2.0
    assert ch._attempt_wait(206.0, None, None) == 0.0  # the last attempt, when retry_for ends
    answered_and_closed(ch, events=0)
    with pytest.raises(ChannelBroken, match="answered 3 of the attempts") as info:
        ch._attempt_wait(206.1, None, None)
    assert "(retry_for=): the server closed the stream" in str(info.value)
    ch = Channel(retry=0.5, retry_for=10.0)
    ch._connection_lost(None)
    assert ch._attempt_wait(100.0, None, None) == 0.5
    ch.now = 109.0
    assert ch._attempt_wait(109.0, None, None) == 0.0
    answered_and_closed(ch)  # a message: the budget and the backoff start over
    assert ch._lost_at == 109.0
    assert ch._attempt_wait(109.0, None, None) == 0.5


def test_a_call_past_its_deadline_makes_no_further_attempt() -> None:
    """A server that answers and closes at once, with ``retry: 0`` (a foreign server that
    sends what it has and closes, say): every attempt succeeded, so the next was due at once,
    and a recv(timeout=1) went on connecting past its deadline until an attempt happened to
    fail (1.0-2.2 s measured against a loopback server). A call whose deadline has passed
    now makes no further attempt once it made one; a call that comes late still makes the
    attempt that is due (recv(timeout=0) reconnects)."""
    ch = Channel(retry=0.0)
    ch._connection_lost(None)
    assert ch._attempt_wait(100.0, 101.0, 1.0) == 0.0  # recv(timeout=1) at 100: attempts
    ch._attempt_deadline(100.0, 101.0)
    answered_and_closed(ch)
    assert ch._attempt_wait(100.5, 101.0, 1.0) == 0.0  # within its deadline: again
    ch._attempt_deadline(100.5, 101.0)
    answered_and_closed(ch)
    with pytest.raises(Timeout, match=r"within 1.0 s \(reconnecting\)"):
        ch._attempt_wait(101.2, 101.0, 1.0)  # past it: no more
    assert ch._attempt_wait(101.3, 101.3, 0.0) == 0.0  # a new call, even timeout=0: attempts
    ch._attempt_deadline(101.3, 101.3)
    answered_and_closed(ch)
    with pytest.raises(Timeout):
        ch._attempt_wait(101.3, 101.3, 0.0)


def test_a_failed_attempt_after_close_is_closed() -> None:
    ch = Channel()
    ch._closed = True
    with pytest.raises(ChannelClosed):
        ch._attempt_failed(ChannelBroken("refused", endpoint=URL))


def test_connection_errors() -> None:
    ch = Channel()
    tls = ch._connect_error(ssl.SSLError(1, "bad certificate"))
    assert type(tls) is ChannelBroken
    assert "TLS handshake" in str(tls)
    assert type(ch._connect_error(TimeoutError())) is Timeout
    refused = ch._connect_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert isinstance(refused, ConnectionRefused)
    silent = ch._answer_error(TimeoutError())
    assert type(silent) is Timeout
    assert "did not answer within 3.0 s" in str(silent)


def test_reading_the_answer_and_the_stream() -> None:
    ch = Channel()
    buf = bytearray()
    assert ch._answer(buf, HEAD[:10]) is None  # the head is not whole yet
    event = b"id: " + SID.encode() + b"-1\ndata: aGk=\n\n"
    assert ch._answer(buf, HEAD[10:] + event[:5]) == (True, event[:5])
    ch._opened(("127.0.0.1", 8080), event[:5])
    assert ch.peer is not None
    assert ch.peer.address == "127.0.0.1:8080"
    ch._received(event[5:])
    assert ch._core.pop() == b"hi"
    assert ch.connected
    ch._received(b"")  # the server closed the connection
    assert not ch.connected
    assert ch._lost_at == ch.now
    with pytest.raises(ChannelBroken, match="closed the connection before answering"):
        ch._answer(bytearray(), b"")


def test_asyncio_untrusted_certificate_is_authentication_failed(tmp_path: Path) -> None:
    server_ctx, _ = tls_contexts(tmp_path)

    async def main() -> None:
        url = "sse+https://127.0.0.1:0/secure"
        async with await aio.listen(url, ssl=server_ctx, codec="json") as listener:
            with pytest.raises(AuthenticationFailed, match="not trusted"):
                await aio.connect(listener.url, codec="json", timeout=5)

    asyncio.run(asyncio.wait_for(main(), 30))
