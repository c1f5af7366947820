"""A codec derived from ipcwire's raw bytes codec keeps its own encode and decode.

The raw codec's fast paths (bytes sent as they are, ``bytes()`` for decoding, the C framing
of unix/tcp/pipes/FIFOs, shared memory's C ring, ...) are taken for ipcwire's own codec only.
Before, most mechanisms took them for any subclass too (``isinstance``), and the subclass's
encode or decode never ran: udp and blocking grpc first, then the stream mechanisms (unix,
tcp, pipe, fifo: ``WireFormat.is_raw``), shm, mq, asyncio grpc, grpc's unary calls, http
(both sides) and sse (both sides).

Every mechanism that carries bytes is checked here with real endpoints, blocking and asyncio:
``Marked`` adds ``!`` when it encodes and ``?`` when it decodes, so a message that went one
way arrives with ``!?`` and a reply to it (its upper case) with ``!?!?``."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio, pipe
from ipcwire._core.codecs import BytesCodec
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.errors import RemoteProtocolError

BOUND = 10.0
_n = itertools.count()


class Marked(BytesCodec):
    """Raw bytes with a mark on the way out and another on the way in."""

    def encode(self, obj: Any) -> bytes:
        return bytes(obj) + b"!"

    def decode(self, data: memoryview) -> Any:
        return bytes(data) + b"?"


class Checked(BytesCodec):
    """Raw bytes whose decode refuses some (a checksum that does not match, say)."""

    def decode(self, data: memoryview) -> Any:
        if bytes(data) == b"bad":
            raise ValueError("bad checksum")
        return bytes(data)


# Mechanisms with a listener: (URL in a private directory, connect() options, whether every
# call is a channel of its own on the server: unary gRPC, HTTP without a session).
MECHANISMS: dict[str, tuple[Callable[[Path], str], dict[str, Any], bool]] = {
    "unix": (lambda d: f"unix://{d}/u{next(_n)}.sock", {}, False),
    "tcp": (lambda d: "tcp://127.0.0.1:0", {}, False),
    "udp": (lambda d: "udp://127.0.0.1:0", {}, False),
    "grpc": (lambda d: "grpc://127.0.0.1:0", {}, False),
    "grpc-unary": (lambda d: "grpc://127.0.0.1:0", {"unary": True}, True),
    "http": (lambda d: "http://127.0.0.1:0/marked", {}, False),
    "http-no-session": (lambda d: "http://127.0.0.1:0/marked", {"session": False}, True),
    "ws": (lambda d: "ws://127.0.0.1:0/marked", {}, False),
    "shm": (lambda d: f"shm://{d}/m{next(_n)}.sock", {}, False),
    "mq": (lambda d: f"mq:///iwmark{os.getpid()}-{next(_n)}", {}, False),
    "fifo": (lambda d: f"fifo://{d}/f{next(_n)}.fifo?reply={d}/r{next(_n)}.fifo", {}, False),
}


# -- blocking -----------------------------------------------------------------------------------
def _ask(client: Channel) -> None:
    """A request (some mechanisms answer it on a path of its own), then a send and a recv."""
    assert client.request(b"ask", timeout=BOUND) == b"ASK!?!?"
    client.send(b"hello", timeout=BOUND)
    assert client.recv(timeout=BOUND) == b"HELLO!?!?"


def _exchange(
    connect: Callable[[], Channel], accept: Callable[[], Channel], one_shot: bool
) -> None:
    """The client asks (:func:`_ask`) while a thread answers each message with its upper case
    (a new channel for each with ``one_shot``); the server's channels stay open until the
    client has its replies."""
    done = threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        peers: list[Channel] = []
        try:
            for _ in range(2):
                if one_shot or not peers:
                    peers.append(accept())
                msg = peers[-1].recv(timeout=BOUND)
                peers[-1].send(msg.upper(), timeout=BOUND)
            done.wait(BOUND)
        except BaseException as exc:
            failed.append(exc)
        finally:
            for peer in peers:
                peer.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with connect() as client:
            _ask(client)
    finally:
        done.set()
        t.join(BOUND)
    assert not t.is_alive()
    if failed:
        raise failed[0]


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
def test_a_subclass_of_the_bytes_codec_encodes_and_decodes_its_way(
    mechanism: str, sock_dir: Path
) -> None:
    url, options, one_shot = MECHANISMS[mechanism]
    with ipcwire.listen(url(sock_dir), codec=Marked()) as listener:
        _exchange(
            lambda: ipcwire.connect(listener.url, codec=Marked(), timeout=BOUND, **options),
            lambda: listener.accept(timeout=BOUND),
            one_shot,
        )


# where a message that does not decode is the receiver's error, in its place
REFUSING = ["unix", "tcp", "grpc", "ws", "shm", "mq", "fifo"]


@pytest.mark.parametrize("mechanism", REFUSING)
def test_a_subclass_that_refuses_a_message_is_a_remote_protocol_error(
    mechanism: str, sock_dir: Path
) -> None:
    """As from any custom codec: RemoteProtocolError naming the endpoint, then the next
    message (before, the subclass's own exception came as it is, or shm skipped decode)."""
    url, options, _ = MECHANISMS[mechanism]
    with ipcwire.listen(url(sock_dir), codec=Checked()) as listener:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(listener.accept(timeout=BOUND)))
        t.start()
        try:
            client = ipcwire.connect(listener.url, codec=Checked(), timeout=BOUND, **options)
        finally:
            t.join(BOUND)
        with client, box[0] as server:
            client.send(b"bad", timeout=BOUND)
            client.send(b"good", timeout=BOUND)
            with pytest.raises(RemoteProtocolError, match="bad checksum") as info:
                server.recv(timeout=BOUND)
            assert info.value.endpoint is not None
            assert server.recv(timeout=BOUND) == b"good"


def test_stream_paths_without_the_extension(impl: str, sock_dir: Path) -> None:
    """unix (as tcp) on the C framing paths and on the Python ones (``_pack_raw``)."""
    with ipcwire.listen(f"unix://{sock_dir}/p{next(_n)}.sock", codec=Marked()) as listener:
        _exchange(
            lambda: ipcwire.connect(listener.url, codec=Marked(), timeout=BOUND),
            lambda: listener.accept(timeout=BOUND),
            False,
        )


def test_anonymous_pipes() -> None:
    a, b = pipe.pair(codec=Marked())
    with b:
        _exchange(lambda: a, lambda: b, False)


def test_a_spool(tmp_path: Path) -> None:
    url = f"spool://{tmp_path}/s"
    with ipcwire.connect(url, codec=Marked()) as a, ipcwire.connect(url, codec=Marked()) as b:
        a.send(b"hello", timeout=BOUND)
        assert b.recv(timeout=BOUND) == b"hello!?"


def test_server_sent_events() -> None:
    with ipcwire.listen("sse+http://127.0.0.1:0/events", codec=Marked()) as listener:
        client = ipcwire.connect(listener.url, codec=Marked(), timeout=BOUND)
        server = listener.accept(timeout=BOUND)
        with client, server:
            for msg in (b"one", b"two", b"three"):
                server.send(msg, timeout=BOUND)
            got = [client.recv(timeout=BOUND) for _ in range(3)]
    assert got == [b"one!?", b"two!?", b"three!?"]


# -- asyncio ------------------------------------------------------------------------------------
async def _aask(client: AioChannel) -> None:
    assert await client.request(b"ask", timeout=BOUND) == b"ASK!?!?"
    await client.send(b"hello", timeout=BOUND)
    assert await client.recv(timeout=BOUND) == b"HELLO!?!?"


async def _aexchange(
    connect: Callable[[], Awaitable[AioChannel]],
    accept: Callable[[], Awaitable[AioChannel]],
    one_shot: bool,
) -> None:
    """:func:`_exchange` with tasks."""
    done = asyncio.Event()

    async def serve() -> None:
        peers: list[AioChannel] = []
        try:
            for _ in range(2):
                if one_shot or not peers:
                    peers.append(await accept())
                msg = await peers[-1].recv(timeout=BOUND)
                await peers[-1].send(msg.upper(), timeout=BOUND)
            await asyncio.wait_for(done.wait(), BOUND)
        finally:
            for peer in peers:
                await peer.aclose()

    serving = asyncio.ensure_future(serve())
    try:
        async with await connect() as client:
            await _aask(client)
    finally:
        done.set()
        await asyncio.wait_for(serving, BOUND)


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
def test_asyncio_a_subclass_of_the_bytes_codec_encodes_and_decodes_its_way(
    mechanism: str, sock_dir: Path, aio_run: AioRun
) -> None:
    url, options, one_shot = MECHANISMS[mechanism]

    async def main() -> None:
        async with await aio.listen(url(sock_dir), codec=Marked()) as listener:
            await _aexchange(
                lambda: aio.connect(listener.url, codec=Marked(), timeout=BOUND, **options),
                lambda: listener.accept(timeout=BOUND),
                one_shot,
            )

    aio_run(main())


@pytest.mark.parametrize("mechanism", REFUSING)
def test_asyncio_a_subclass_that_refuses_a_message_is_a_remote_protocol_error(
    mechanism: str, sock_dir: Path, aio_run: AioRun
) -> None:
    url, options, _ = MECHANISMS[mechanism]

    async def main() -> None:
        async with await aio.listen(url(sock_dir), codec=Checked()) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=BOUND))
            client = await aio.connect(listener.url, codec=Checked(), timeout=BOUND, **options)
            async with client, await accepting as server:
                await client.send(b"bad", timeout=BOUND)
                await client.send(b"good", timeout=BOUND)
                with pytest.raises(RemoteProtocolError, match="bad checksum") as info:
                    await server.recv(timeout=BOUND)
                assert info.value.endpoint is not None
                assert await server.recv(timeout=BOUND) == b"good"

    aio_run(main())


def test_asyncio_anonymous_pipes(aio_run: AioRun) -> None:
    async def main() -> None:
        first, second = pipe.ends()
        a, b = await asyncio.gather(first.aopen(codec=Marked()), second.aopen(codec=Marked()))
        async with b:

            async def connect() -> AioChannel:
                return a

            async def accept() -> AioChannel:
                return b

            await _aexchange(connect, accept, False)

    aio_run(main())


def test_asyncio_a_spool(tmp_path: Path, aio_run: AioRun) -> None:
    async def main() -> None:
        url = f"spool://{tmp_path}/s{next(_n)}"
        async with (
            await aio.connect(url, codec=Marked()) as a,
            await aio.connect(url, codec=Marked()) as b,
        ):
            await a.send(b"hello", timeout=BOUND)
            assert await b.recv(timeout=BOUND) == b"hello!?"

    aio_run(main())


def test_asyncio_server_sent_events(aio_run: AioRun) -> None:
    async def main() -> list[Any]:
        async with await aio.listen("sse+http://127.0.0.1:0/events", codec=Marked()) as lis:
            client = await aio.connect(lis.url, codec=Marked(), timeout=BOUND)
            server = await lis.accept(timeout=BOUND)
            async with client, server:
                for msg in (b"one", b"two", b"three"):
                    await server.send(msg, timeout=BOUND)
                return [await client.recv(timeout=BOUND) for _ in range(3)]

    assert aio_run(main()) == [b"one!?", b"two!?", b"three!?"]
