"""Both paths of the blocking fd channels: the C ``FrameSender``/``FrameReceiver`` in fd mode
(``_ext/stream.c``; raw bytes, length framing, no timeout) and the pure-Python paths
(``FRAME_SENDER = FRAME_RECEIVER = None``, as without the extension), on real pipes and a
real child. Calls that would block forever if a wake-up were lost run in a thread that the
test joins with a bound, so a bug fails the test instead of hanging it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests._threads import BOUND, finished, in_thread

from ipcwire import pipe
from ipcwire.channel import Channel
from ipcwire.errors import ChannelBroken, ChannelClosed, EndOfChannel
from ipcwire.pipe import SPEC
from ipcwire.testing import check_channel


@pytest.fixture
def raw_pair(impl: str) -> Iterator[tuple[Channel, Channel]]:
    a, b = pipe.pair(codec="bytes", framing="length")
    with a, b:
        yield a, b


def test_the_c_paths_are_taken_exactly_where_they_are_right(impl: str) -> None:
    a, b = pipe.pair(codec="bytes", framing="length")
    j1, j2 = pipe.pair(codec="json", framing="ndjson")  # Python paths only
    try:
        c = impl == "c"
        assert (getattr(a, "_fast_send", None) is not None) is c
        assert (getattr(a, "_fast_recv", None) is not None) is c
        assert getattr(j1, "_fast_send", None) is None
        assert getattr(j1, "_fast_recv", None) is None
        a.send(b"x")
        assert b.recv() == b"x"
    finally:
        for ch in (a, b, j1, j2):
            ch.close()


def test_conformance_on_both_paths(impl: str) -> None:
    @contextlib.contextmanager
    def make_pair(**options: Any) -> Iterator[tuple[Channel, Channel]]:
        a, b = pipe.pair(**options)
        with a, b:
            yield a, b

    check_channel(make_pair, SPEC.capabilities)


@pytest.mark.parametrize("size", [0, 1, 64, 4092, 4093, 65536, 1 << 20])
def test_round_trips_without_a_timeout_at_every_size(
    raw_pair: tuple[Channel, Channel], size: int
) -> None:
    a, b = raw_pair
    msg = os.urandom(size)

    def echo() -> None:
        for _ in range(20):
            b.send(b.recv())

    t, box = in_thread(echo)
    for _ in range(20):
        a.send(msg)
        assert a.recv() == msg
    assert finished(t), "the echo thread hung"
    assert box == [None]
    sa, sb = a.statistics(), b.statistics()
    assert (sa.messages_sent, sa.messages_received) == (20, 20)
    assert (sb.messages_sent, sb.messages_received) == (20, 20)
    assert sa.bytes_sent == sb.bytes_received == 20 * size


def test_concurrent_senders_never_interleave(raw_pair: tuple[Channel, Channel]) -> None:
    a, b = raw_pair
    sizes = [10, 4092, 4093, 100_000]  # both sides of PIPE_BUF: the C path and Python's

    def sender(k: int) -> None:
        for i in range(50):
            body = bytes([k]) * sizes[(i + k) % len(sizes)]
            a.send(hashlib.sha256(body).digest() + body)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for _ in range(200):
        m = b.recv()
        digest, body = m[:32], m[32:]
        assert hashlib.sha256(body).digest() == digest
        assert body == body[:1] * len(body)
    for t in threads:
        t.join(BOUND)


def test_both_sides_filling_the_pipe_with_small_messages_cannot_deadlock(
    raw_pair: tuple[Channel, Channel],
) -> None:
    a, b = raw_pair
    n = 40_000  # 40000 x 68 bytes: more than a 1 MiB pipe holds, each way

    def side(ch: Channel) -> int:
        for i in range(n):
            ch.send(i.to_bytes(4, "big") * 16)  # a full pipe: the C path hands over
        for i in range(n):
            assert ch.recv() == i.to_bytes(4, "big") * 16
        return n

    ta, box_a = in_thread(lambda: side(a))
    tb, box_b = in_thread(lambda: side(b))
    assert finished(ta) and finished(tb), "both sides writing first deadlocked"
    assert box_a == box_b == [n]


def test_close_wakes_a_receiver_waiting_without_a_timeout(
    raw_pair: tuple[Channel, Channel],
) -> None:
    _a, b = raw_pair
    t, box = in_thread(b.recv)
    b.close()  # before or during the wait: either way ChannelClosed, never a hang
    assert finished(t)
    assert isinstance(box[0], ChannelClosed)
    with pytest.raises(ChannelClosed):
        b.send(b"after close")


def test_end_of_stream_and_a_cut_message_without_a_timeout(impl: str) -> None:
    first, second = pipe.ends()
    with second.open(codec="bytes") as ch:
        assert first.wfd is not None
        os.write(first.wfd, b"\x00\x00\x00\x02ok\x00\x00\x01\x00half a message")
        first.close()
        assert ch.recv() == b"ok"
        t, box = in_thread(ch.recv)
        assert finished(t)
        assert isinstance(box[0], ChannelBroken)
        assert "middle of a message" in str(box[0])

    a, b = pipe.pair(codec="bytes")
    with b:
        a.send(b"last")
        a.close()
        assert b.recv() == b"last"
        t, box = in_thread(b.recv)
        assert finished(t)
        assert isinstance(box[0], EndOfChannel)
