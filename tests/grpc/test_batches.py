"""Batches on gRPC streams (docs/mechanisms/grpc.md, "Batches"): what two ipcwire sides pack
into one gRPC message, checked on the wire by plain grpcio peers that decode the documented
format themselves, and what a side does with peers that did not ask for batches."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

import ipcwire
from ipcwire import aio
from ipcwire.channel import Listener
from ipcwire.errors import EndOfChannel, FrameTooLarge, RemoteProtocolError
from ipcwire.grpc._protocol import plan_batches, unpack_batch

MARKER = b"\xc1ipcwB\x00\x01"  # as documented, not imported: the test checks the docs
STREAM = "/ipcwire.Channel/Stream"
# Sizes chosen to cover the empty message, a message that looks like a batch, and variety.
MESSAGES = [b"", MARKER + b"not a batch"] + [bytes([i % 251]) * (i % 97) for i in range(298)]


def batch(*items: bytes) -> bytes:
    return MARKER + b"".join(struct.pack("<I", len(d)) + d for d in items)


def unbatch(msg: bytes) -> list[bytes]:
    """The documented format, decoded independently of ipcwire's code."""
    if not msg.startswith(MARKER):
        return [msg]
    out, pos = [], len(MARKER)
    while pos < len(msg):
        (n,) = struct.unpack_from("<I", msg, pos)
        out.append(msg[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(msg)
    return out


class RawServer:
    """A plain grpcio server speaking ipcwire's stream protocol by hand: it says it reads
    batches when ``batches``, records the gRPC messages of the first ``expect`` messages it
    receives, then writes ``script`` (raw gRPC messages) and ends the stream."""

    def __init__(self, *, batches: bool, expect: int, script: list[bytes]) -> None:
        self.batches, self.expect, self.script = batches, expect, script
        self.wire: list[bytes] = []
        self.got: list[bytes] = []
        self.offered: str | None = None
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        handler = grpc.stream_stream_rpc_method_handler(self._stream)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("ipcwire.Channel", {"Stream": handler}),)
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.url = f"grpc://127.0.0.1:{port}"
        self.server.start()

    def _stream(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        self.offered = dict(context.invocation_metadata()).get("ipcwire-batch")
        initial = [("ipcwire-max-frame", str(1 << 20))]
        if self.batches:
            initial.append(("ipcwire-batch", "1"))
        context.send_initial_metadata(initial)
        while len(self.got) < self.expect:
            msg = next(requests)
            self.wire.append(msg)
            self.got += unbatch(msg) if self.batches else [msg]
        yield from self.script

    def close(self) -> None:
        self.server.stop(None)


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    made: list[RawServer] = []

    def make(**kw: Any) -> RawServer:
        made.append(RawServer(**kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_the_format() -> None:
    items = [b"a", b"", MARKER, b"z" * 10]
    [(wire, count, size)] = plan_batches(items, 1 << 20)
    assert wire == batch(*items) and count == 4 and size == 19
    assert unpack_batch(wire, "grpc://x") == items
    # Alone, a message is sent as it is, unless it looks like a batch.
    assert list(plan_batches([b"abc"], 100)) == [(b"abc", 1, 3)]
    assert list(plan_batches([MARKER], 100)) == [(batch(MARKER), 1, 8)]
    # The peer's limit splits batches; every message is in exactly one.
    planned = list(plan_batches([b"x" * 30] * 10, 100))
    assert [c for _, c, _ in planned] == [2, 2, 2, 2, 2]
    assert all(len(w) <= 100 for w, _, _ in planned)
    assert [m for w, _, _ in planned for m in unpack_batch(w, "u")] == [b"x" * 30] * 10
    assert unpack_batch(MARKER, "grpc://x") == []  # an empty batch: a client's goodbye (BYE)
    for garbled in (batch(b"abc")[:-1], batch(b"abc") + b"\x01", MARKER + b"\x05\0\0"):
        with pytest.raises(RemoteProtocolError, match="grpc://x sent a garbled batch"):
            unpack_batch(garbled, "grpc://x")


def test_blocking_client_batches_and_reads_batches(raw_server: Callable[..., RawServer]) -> None:
    script = [b"alone", batch(b"one", b"", b"three"), batch(MARKER + b"x"), MARKER[:4]]
    srv = raw_server(batches=True, expect=len(MESSAGES), script=script)
    with ipcwire.connect(srv.url) as ch:
        ch.send_many(MESSAGES)
        got = [ch.recv(timeout=10) for _ in range(6)]
    assert srv.offered == "1"
    assert srv.got == MESSAGES
    assert len(srv.wire) == 1  # send_many's messages: one gRPC message
    assert got == [b"alone", b"one", b"", b"three", MARKER + b"x", MARKER[:4]]


def test_asyncio_client_batches_and_reads_batches(raw_server: Callable[..., RawServer]) -> None:
    script = [batch(b"one", b"two"), b"alone", batch(b"three")]
    srv = raw_server(batches=True, expect=len(MESSAGES) + 1, script=script)

    async def main() -> list[bytes]:
        async with await aio.connect(srv.url) as ch:
            # The first send writes at once; the next ones queue (the last thing done was a
            # send), and the writer task takes them all when this task next waits.
            for m in MESSAGES:
                await ch.send(m)
            await ch.send_many([MARKER])
            first = await ch.recv()  # the direct read
            rest = [await ch.recv(timeout=10) for _ in range(3)]  # the reader task
            return [first, *rest]

    assert asyncio.run(main()) == [b"one", b"two", b"alone", b"three"]
    assert srv.wire == [MESSAGES[0], batch(*MESSAGES[1:], MARKER)]


@pytest.mark.parametrize("flavour", ["blocking", "asyncio"])
def test_a_garbled_batch_is_a_protocol_error(
    raw_server: Callable[..., RawServer], flavour: str
) -> None:
    srv = raw_server(batches=True, expect=0, script=[b"fine", batch(b"abc", b"def")[:-1]])
    if flavour == "blocking":
        with ipcwire.connect(srv.url) as ch:
            assert ch.recv(timeout=10) == b"fine"
            with pytest.raises(RemoteProtocolError, match=f"{srv.url} sent a garbled batch"):
                ch.recv(timeout=10)
            return

    async def main() -> None:
        async with await aio.connect(srv.url) as ch:
            assert await ch.recv() == b"fine"
            with pytest.raises(RemoteProtocolError, match=f"{srv.url} sent a garbled batch"):
                await ch.recv()

    asyncio.run(main())


def test_no_batches_to_a_peer_that_did_not_ask(raw_server: Callable[..., RawServer]) -> None:
    srv = raw_server(batches=False, expect=len(MESSAGES) + 1, script=[b"ok"])
    with ipcwire.connect(srv.url) as ch:
        ch.send_many(MESSAGES)
        ch.send(MARKER + b"raw")
        assert ch.recv(timeout=10) == b"ok"
    assert srv.offered == "1"
    assert srv.wire == [*MESSAGES, MARKER + b"raw"]  # one gRPC message each, as they are


def _plain_client(lis: Listener, batches: bool, send: list[bytes]) -> list[bytes]:
    """Stream ``send`` from a plain grpcio client that says it is ipcwire (and reads batches
    when asked), half-close, and return the gRPC messages received."""
    md = [("ipcwire-codec", "bytes"), ("ipcwire-max-frame", str(1 << 20))]
    if batches:
        md.append(("ipcwire-batch", "1"))
    with grpc.insecure_channel(lis.url.removeprefix("grpc://")) as gch:
        call = gch.stream_stream(STREAM)(iter(send), metadata=md, timeout=10)
        return list(call)


@pytest.mark.parametrize("batches", [True, False])
def test_blocking_server_batches_only_for_clients_that_ask(batches: bool) -> None:
    sent = [b"hello"] if batches else [b"hello", MARKER + b"raw"]
    got: list[Any] = []
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:

        def serve() -> None:
            with lis.accept(timeout=10) as ch:
                got.extend(ch.recv() for _ in sent)
                ch.send_many(MESSAGES)
                with pytest.raises(EndOfChannel):
                    ch.recv()  # the client's half-close
                got.append("end")

        t = threading.Thread(target=serve)
        t.start()
        wire = _plain_client(lis, batches, sent)
        t.join(10)
    assert got == [*sent, "end"]  # from a client that did not ask, a marker is a message
    if batches:
        assert len(wire) == 1 and unbatch(wire[0]) == MESSAGES
    else:
        assert wire == MESSAGES


def test_blocking_server_refuses_a_garbled_batch() -> None:
    """A client that asked for batches sends a garbled one: the server channel's recv()
    raises RemoteProtocolError after what came before, and the listener serves others."""
    got: list[Any] = []
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:

        def serve() -> None:
            for _ in range(2):
                with lis.accept(timeout=10) as ch:
                    got.append(ch.recv())
                    try:
                        got.append(ch.recv())
                    except RemoteProtocolError as exc:
                        got.append(exc)

        t = threading.Thread(target=serve)
        t.start()
        assert _plain_client(lis, True, [b"hello", batch(b"abc", b"de")[:-1]]) == []
        with ipcwire.connect(lis.url) as ch:
            ch.send_many([b"still", b"serving"])
        t.join(10)
    assert got[0] == b"hello"
    assert isinstance(got[1], RemoteProtocolError) and "garbled batch" in str(got[1])
    assert got[2:] == [b"still", b"serving"]


def test_asyncio_server_batches_for_clients_that_ask() -> None:
    async def main() -> list[bytes]:
        async with await aio.listen("grpc://127.0.0.1:0") as lis:

            async def handler(ch: aio.AioChannel) -> None:
                await ch.send_many(MESSAGES)
                await ch.aclose()

            serving = asyncio.ensure_future(lis.serve(handler))
            wire = await asyncio.to_thread(_plain_client, lis, True, [])  # type: ignore[arg-type]
            lis.close()
            await asyncio.wait_for(serving, 10)
            return wire

    wire = asyncio.run(main())
    assert len(wire) == 1 and unbatch(wire[0]) == MESSAGES


@pytest.mark.parametrize("flavour", ["blocking", "asyncio"])
def test_ipcwire_to_ipcwire(flavour: str) -> None:
    """Both sides ipcwire: everything arrives whole and in order, a message that looks like a
    batch included; one that would pass the limit only as a batch of one is refused."""
    limit = 4096
    big = MARKER + b"y" * (limit - len(MARKER) - 4)  # fits; as a batch of one it would not
    if flavour == "blocking":
        with (
            ipcwire.listen("grpc://127.0.0.1:0", max_frame=limit) as lis,
            ipcwire.connect(lis.url) as c,
            lis.accept(timeout=10) as s,
        ):
            for m in MESSAGES:
                c.send(m)
            c.send_many(MESSAGES)
            got = [s.recv(timeout=10) for _ in range(2 * len(MESSAGES))]
            with pytest.raises(FrameTooLarge, match="batch marker"):
                c.send(big)
            c.send(big[:-100])
            assert s.recv(timeout=10) == big[:-100]
        assert got == MESSAGES * 2
        return

    async def main() -> list[bytes]:
        async with (
            await aio.listen("grpc://127.0.0.1:0", max_frame=limit) as lis,
            await aio.connect(lis.url) as c,
            await lis.accept() as s,
        ):
            for m in MESSAGES:
                await c.send(m)
            await c.send_many(MESSAGES)
            got = [await s.recv(timeout=10) for _ in range(2 * len(MESSAGES))]
            with pytest.raises(FrameTooLarge, match="batch marker"):
                await c.send(big)
            with pytest.raises(FrameTooLarge, match="batch marker"):
                await c.send_many([big])
            await c.send(big[:-100])
            assert await s.recv() == big[:-100]
            return got

    assert asyncio.run(main()) == MESSAGES * 2


@pytest.mark.parametrize("batches", [True, False])
def test_asyncio_a_message_written_at_once_that_looks_like_a_batch(
    raw_server: Callable[..., RawServer], batches: bool
) -> None:
    """The first send() of a channel is written at once, in the caller's task (not by the
    writer task): a message that begins with the marker still goes as a batch of one to a
    peer that reads batches, and as it is to one that does not."""
    srv = raw_server(batches=batches, expect=1, script=[b"ok"])

    async def main() -> bytes:
        async with await aio.connect(srv.url) as ch:
            await ch.send(MARKER + b"x")
            return await ch.recv()  # type: ignore[no-any-return]

    assert asyncio.run(main()) == b"ok"
    assert srv.got == [MARKER + b"x"]
    assert srv.wire == [batch(MARKER + b"x") if batches else MARKER + b"x"]
