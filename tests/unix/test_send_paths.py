"""Both paths of the blocking stream channel: the C ``FrameSender``/``FrameReceiver`` (when
the extension is built) and the pure-Python paths (``FRAME_SENDER = FRAME_RECEIVER = None``,
as without the extension), on Unix and TCP sockets, over real connections."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    EndOfChannel,
    FrameTooLarge,
    LocalProtocolError,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.registry import lookup
from ipcwire.testing import acheck_channel, apair_from_url, check_channel, pair_from_url

Pair = tuple[ipcwire.Channel, ipcwire.Channel]


@pytest.fixture(params=["unix_url", "tcp_url"])
def url(request: pytest.FixtureRequest) -> Callable[[], str]:
    fixture: Callable[[], str] = request.getfixturevalue(request.param)
    return fixture


def _pair(url: str, **options: object) -> Iterator[Pair]:
    with ipcwire.listen(url, **options) as server:  # type: ignore[arg-type]
        client = ipcwire.connect(server.url, timeout=5, **options)  # type: ignore[arg-type]
        peer = server.accept(timeout=5)
        try:
            yield client, peer
        finally:
            client.close()
            peer.close()


@pytest.fixture
def pair(impl: str, url: Callable[[], str]) -> Iterator[Pair]:
    yield from _pair(url())


def _uses_c(ch: ipcwire.Channel) -> bool:
    return getattr(ch, "_fast_send", None) is not None


def _raw_write(ch: ipcwire.Channel, data: bytes) -> None:
    """Write bytes straight to the channel's socket, under ipcwire's framing."""
    ch._stream.sock.sendall(data)  # type: ignore[attr-defined]


def test_conformance_on_both_paths(impl: str, url: Callable[[], str]) -> None:
    spec = lookup(url().split(":")[0])
    check_channel(pair_from_url(url), spec.capabilities, url=url)


def test_asyncio_conformance_on_both_paths(
    impl: str, url: Callable[[], str], aio_run: AioRun
) -> None:
    spec = lookup(url().split(":")[0])
    aio_run(acheck_channel(apair_from_url(url), spec.capabilities, url=url))


BATCH = (
    b"\x00\x00\x00\x01a\x00\x00\x00\x02bb"  # two ordinary frames
    + b"\x00\x00\x10\x00"
    + b"z" * 4096  # one over max_frame=1000
    + b"\x00\x00\x00\x01c\x00\x00\x00"  # one more, and the start of a header
)


def test_recv_many_keeps_order_around_an_oversized_frame(impl: str, url: Callable[[], str]) -> None:
    for a, b in _pair(url(), max_frame=1000):
        _raw_write(a, BATCH)
        got: list[object] = []
        while len(got) < 3:
            try:
                got += b.recv_many(timeout=5)
            except FrameTooLarge as exc:
                got.append(exc.size)
        assert got[:2] == [b"a", b"bb"] and got[2] == 4096
        assert b.recv_many(timeout=5) == [b"c"]
        _raw_write(a, b"\x01d")
        assert b.recv_many(timeout=5) == [b"d"]
        assert b.statistics().messages_received == 4


def test_asyncio_delivery_keeps_order_around_an_oversized_frame(
    impl: str, url: Callable[[], str]
) -> None:
    async def main() -> None:
        server = await ipcwire.aio.listen(url(), max_frame=1000)
        try:
            connecting = asyncio.create_task(
                asyncio.to_thread(ipcwire.connect, server.url, timeout=5, max_frame=1000)
            )
            b = await server.accept(timeout=5)
            a = await connecting
            try:
                assert (b._take is not None) == (impl == "c")  # type: ignore[attr-defined]
                _raw_write(a, BATCH)
                assert [await b.recv(timeout=5), await b.recv(timeout=5)] == [b"a", b"bb"]
                with pytest.raises(FrameTooLarge):
                    await b.recv(timeout=5)
                assert await b.recv(timeout=5) == b"c"
                _raw_write(a, b"\x01d")
                assert await b.recv_many(timeout=5) == [b"d"]
                stats = b.statistics()
                assert (stats.messages_received, stats.bytes_received) == (4, 1 + 2 + 1 + 1)
            finally:
                a.close()
                await b.aclose()
        finally:
            server.close()

    asyncio.run(main())


def test_payload_types_and_statistics(impl: str, pair: Pair) -> None:
    a, b = pair
    assert _uses_c(a) == (impl == "c")
    # (small memoryviews are left out: _core's WireFormat.pack cannot concatenate them yet)
    payloads: list[bytes | bytearray | memoryview] = [
        b"",
        b"x",
        bytearray(b"abc"),
        memoryview(os.urandom(100_000)),
        os.urandom(200_000),  # over the copy limit: header and payload as two buffers
    ]
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.extend(b.recv(timeout=10) for _ in payloads))
    reader.start()
    for p in payloads:
        a.send(p)
    reader.join()
    assert received == [bytes(p) for p in payloads]
    a.send_many([b"m1", b"m2"])
    a.send(b"t", timeout=5)  # a timeout: always the Python path
    got: list[bytes] = []
    while len(got) < 3:
        got += b.recv_many(timeout=5)
    assert got == [b"m1", b"m2", b"t"]
    stats = a.statistics()
    assert b.statistics().messages_received == stats.messages_sent
    assert b.statistics().bytes_received == stats.bytes_sent  # both count message bytes
    assert stats.messages_sent == len(payloads) + 3
    total = sum(len(bytes(p)) for p in payloads) + 2 + 2 + 1
    assert stats.bytes_sent == total  # framing not counted
    with pytest.raises(LocalProtocolError):
        a.send("not bytes")


def test_over_the_peer_limit_is_refused_on_both_paths(impl: str, url: Callable[[], str]) -> None:
    for a, b in _pair(url(), max_frame=1000):
        with pytest.raises(FrameTooLarge):
            a.send(b"x" * 1001)
        a.send(b"y" * 1000)
        assert b.recv(timeout=5) == b"y" * 1000


def test_other_codecs_share_the_lock(impl: str, url: Callable[[], str]) -> None:
    for a, b in _pair(url(), codec="json"):
        a.send({"n": 1})
        a.send_many([{"n": 2}, {"n": 3}])
        assert [b.recv(timeout=5) for _ in range(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert a.statistics().messages_sent == 3


def test_concurrent_senders_never_interleave(impl: str, pair: Pair) -> None:
    a, b = pair
    big = 3 * 1024 * 1024  # far over the socket buffer: every send blocks part-way
    threads = [
        threading.Thread(target=lambda i=i: [a.send(bytes([i]) * big) for _ in range(3)])
        for i in range(4)
    ] + [threading.Thread(target=lambda: [a.send(b"small") for _ in range(200)])]
    for t in threads:
        t.start()
    got = [b.recv(timeout=30) for _ in range(4 * 3 + 200)]
    for t in threads:
        t.join()
    large = [m for m in got if len(m) == big]
    assert len(large) == 12
    assert all(m == m[:1] * big for m in large)
    assert got.count(b"small") == 200


def test_closed_and_broken(impl: str, pair: Pair) -> None:
    a, b = pair
    b.close()
    with pytest.raises(ChannelBroken):
        for _ in range(1000):  # the first sends may still land in the socket buffer
            a.send(b"x" * 1000)
    a.close()
    with pytest.raises(ChannelClosed):
        a.send(b"x")


def test_frames_split_anyhow_oversized_and_partial(impl: str, url: Callable[[], str]) -> None:
    for a, b in _pair(url(), max_frame=1000):
        assert (b._fast_recv is not None) == (impl == "c")  # type: ignore[attr-defined]
        _raw_write(a, b"\x00\x00")  # half a header
        with pytest.raises(Timeout):
            b.recv(timeout=0.05)  # leaves a receive timeout set on the socket
        _raw_write(a, b"\x00\x03ab")
        reader = threading.Thread(target=_raw_write, args=(a, b"c"))
        reader.start()
        assert b.recv() == b"abc"  # the rest arrives while it waits
        reader.join()
        _raw_write(a, b"\x00\x00\x10\x00" + b"z" * 4096 + b"\x00\x00\x00\x02ok")
        with pytest.raises(FrameTooLarge):
            b.recv()
        assert b.recv() == b"ok"  # the stream stays in step
        _raw_write(a, b"\x00\x00\x00\x01x\x00\x00\x00\x01y\x00\x00")
        assert [b.recv(), b.recv()] == [b"x", b"y"]
        # the end of the stream, without the goodbye a.close() would write after the half
        # header written behind its back
        a._stream.sock.shutdown(socket.SHUT_WR)  # type: ignore[attr-defined]
        with pytest.raises(ChannelBroken, match="middle of a message"):
            b.recv()  # closed in the middle of a message


def test_end_of_channel_and_close_while_waiting(impl: str, pair: Pair) -> None:
    a, b = pair
    a.send(b"last")
    a.close()
    assert b.recv() == b"last"
    with pytest.raises(EndOfChannel):
        b.recv()
    with pytest.raises(EndOfChannel):
        b.recv()


def test_close_from_another_thread_wakes_a_receiver(impl: str, pair: Pair) -> None:
    a, b = pair
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            b.recv()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=receive)
    t.start()
    a.send(b"wake")  # proves the receiver is in recv before the close (it gets this first)
    t.join()
    t = threading.Thread(target=receive)
    t.start()
    b.close()
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ChannelClosed)


def test_concurrent_receivers_each_get_whole_messages(impl: str, pair: Pair) -> None:
    a, b = pair
    got: list[bytes] = []
    lock = threading.Lock()

    def receive() -> None:
        for _ in range(250):
            m = b.recv(timeout=30)
            with lock:
                got.append(m)

    threads = [threading.Thread(target=receive) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(1000):
        a.send(i.to_bytes(4, "big") * (1 + i % 50))
    for t in threads:
        t.join()
    assert sorted(int.from_bytes(m[:4], "big") for m in got) == list(range(1000))
    assert all(m == m[:4] * (len(m) // 4) for m in got)


BLOCK_EXTENSION_AND_SEND = """
import importlib.abc, sys

class NoExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ipcwire._ext._native":
            raise ImportError("extension not built (simulated)")
        return None

sys.meta_path.insert(0, NoExtension())
import ipcwire
from ipcwire._stream import native
with ipcwire.listen(sys.argv[1]) as server:
    a = ipcwire.connect(server.url, timeout=5)
    b = server.accept(timeout=5)
    a.send(b"hello")
    print(native.FRAME_SENDER, b.recv(timeout=5).decode(), a.statistics().messages_sent)
"""


def test_without_the_extension_the_python_path_is_used(unix_url: Callable[[], str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BLOCK_EXTENSION_AND_SEND), unix_url()],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "hello", "1"]


def test_ipcwire_stream_impl_python_selects_the_python_path() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ipcwire._stream import native; print(native.FRAME_SENDER)",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "IPCWIRE_STREAM_IMPL": "python"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None"


class _Picky:
    """A custom codec (any object with name, encode and decode) whose decode refuses some
    payloads with its own exception, as a user's codec may."""

    name = "picky"

    def encode(self, obj: bytes) -> bytes:
        return obj

    def decode(self, data: memoryview) -> bytes:
        if bytes(data[:1]) == b"!":
            raise ValueError("picky: a payload starting with '!'")
        return bytes(data)


PICKY_BATCH = b"\x00\x00\x00\x01a\x00\x00\x00\x02!x\x00\x00\x00\x01b\x00\x00\x00\x01c"


def test_a_codec_error_mid_batch_loses_nothing_on_both_drivers(
    impl: str, url: Callable[[], str]
) -> None:
    """A codec's own exception for one message (msgspec raises UnicodeDecodeError for
    invalid UTF-8 in a JSON string) must be raised in its place and the channel go on, on
    both drivers. recv_many dropped the messages it had already taken, and the asyncio
    channel tore the connection down ("Fatal error: protocol.buffer_updated() call failed")
    and lost everything after it."""
    for a, b in _pair(url(), codec=_Picky()):
        _raw_write(a, PICKY_BATCH)
        got: list[object] = []
        while len(got) < 4:
            try:
                got += b.recv_many(timeout=5)
            except (ValueError, RemoteProtocolError) as exc:  # the codec's, or it wrapped
                got.append("refused" if "payload starting with '!'" in str(exc) else exc)
        assert got == [b"a", "refused", b"b", b"c"]

    async def main() -> list[object]:
        server = await ipcwire.aio.listen(url(), codec=_Picky())
        try:
            connecting = asyncio.create_task(
                asyncio.to_thread(ipcwire.connect, server.url, timeout=5, codec=_Picky())
            )
            b = await server.accept(timeout=5)
            a = await connecting
            try:
                _raw_write(a, PICKY_BATCH)
                got: list[object] = []
                while len(got) < 4:
                    try:
                        got.append(await b.recv(timeout=5))
                    except (ValueError, RemoteProtocolError) as exc:
                        got.append("refused" if "payload starting with '!'" in str(exc) else exc)
                return got
            finally:
                a.close()
                await b.aclose()
        finally:
            server.close()

    assert asyncio.run(main()) == [b"a", "refused", b"b", b"c"]


def test_send_with_timeout_zero_never_blocks(pair: Pair) -> None:
    """send(timeout=0) into full buffers blocked forever: SO_SNDTIMEO 0 means "no timeout"
    to the kernel. It must raise Timeout at once, as recv(timeout=0) does."""
    a, _b = pair  # b never reads
    outcome: list[BaseException] = []

    def fill() -> None:
        try:
            for _ in range(100_000):  # 100 MiB: more than any socket buffer holds
                a.send(b"x" * 1024, timeout=0)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    t = threading.Thread(target=fill, daemon=True)
    t.start()
    t.join(10)  # a guard: the fix raises at once
    if t.is_alive():
        a.close()  # wakes the blocked send, so the thread ends
        t.join(10)
        pytest.fail("send(timeout=0) blocked on a full buffer")
    assert len(outcome) == 1 and isinstance(outcome[0], Timeout), outcome
