"""Blocking gRPC round trips, one message at a time, and a full inbox: the paths a request
and its reply take on both sides (a server's recv() without a timeout reads in its own
thread, a client's through its reader thread; a plain bytes send skips the encoder), and the
reader thread's pause while its inbox is full, which a receive ends (docs/mechanisms/grpc.md).
Whatever a message looks like, it arrives whole, in order, and the statistics count it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from tests._proc import wait_until

import ipcwire
from ipcwire.grpc._channel import HIGH_WATER_MESSAGES

MARKER = b"\xc1ipcwB\x00\x01"  # the batch marker (docs/mechanisms/grpc.md, "Batches")
BYTES = [b"", MARKER, MARKER + b"x", MARKER[:4], b"\xc1", b"x" * 64, bytes(range(256)) * 300]
OBJECTS: list[Any] = [None, "", {"a": [1, 2.5, "\xc1ipcwB"]}, "x" * 5000, [], 0]
BOUND = 10.0


@pytest.mark.parametrize("codec", ["bytes", "json"])
def test_ping_pong_through_the_direct_paths(codec: str) -> None:
    messages = BYTES if codec == "bytes" else OBJECTS
    with (
        ipcwire.listen("grpc://127.0.0.1:0", codec=codec) as lis,
        ipcwire.connect(lis.url, codec=codec, timeout=BOUND) as c,
        lis.accept(timeout=BOUND) as s,
    ):
        seen: list[Any] = []

        def echo() -> None:
            for _ in messages:
                m = s.recv()
                seen.append(m)
                s.send(m)

        server = threading.Thread(target=echo)
        server.start()
        replies = []
        for m in messages:
            c.send(m)
            replies.append(c.recv())
        server.join(BOUND)
        assert not server.is_alive()
        if codec == "bytes":  # (bytes-like objects other than bytes go through the encoder)
            for m in (bytearray(b"ab"), memoryview(b"xyz")[::2]):
                c.send(m)
                s.send(s.recv(timeout=BOUND))
                replies.append(c.recv(timeout=BOUND))
            assert replies[-2:] == [b"ab", b"xz"]
            replies = replies[:-2]
        cs, ss = c.statistics(), s.statistics()
    assert replies == messages and seen == messages
    n = len(messages) + (2 if codec == "bytes" else 0)
    assert (cs.messages_sent, cs.messages_received) == (n, n)
    assert (ss.messages_sent, ss.messages_received) == (n, n)
    assert cs.bytes_sent == cs.bytes_received == ss.bytes_sent == ss.bytes_received > 0


@pytest.mark.parametrize("reader", ["client", "server"])
def test_a_reader_thread_paused_by_a_full_inbox_resumes_as_it_is_read(reader: str) -> None:
    """More than HIGH_WATER_MESSAGES arrive while nobody receives: the reader thread stops
    at that many in the inbox, and the receives that empty it wake it again."""
    n = 3 * HIGH_WATER_MESSAGES
    with (
        ipcwire.listen("grpc://127.0.0.1:0") as lis,
        ipcwire.connect(lis.url, timeout=BOUND) as c,
        lis.accept(timeout=BOUND) as s,
    ):
        rx, tx = (c, s) if reader == "client" else (s, c)
        tx.send(b"first")
        assert rx.recv(timeout=BOUND) == b"first"  # (a receive with a timeout: the thread)
        failed: list[BaseException] = []

        def send_all() -> None:
            try:
                for i in range(n):
                    tx.send(b"%d" % i, timeout=BOUND)
            except BaseException as exc:
                failed.append(exc)

        sender = threading.Thread(target=send_all)
        sender.start()
        stream: Any = getattr(rx, "_s", rx)
        inbox = stream._inbox
        assert wait_until(lambda: len(inbox) > HIGH_WATER_MESSAGES, BOUND)  # (and it stops)
        got = [rx.recv(timeout=BOUND) for _ in range(n)]
        sender.join(BOUND)
        assert not failed, failed
    assert got == [b"%d" % i for i in range(n)]
