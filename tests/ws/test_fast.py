"""ipcwire.ws._fast: the fast frame loop, frame writer and message queue behave exactly like
the websockets library's own, byte for byte, on good input and bad, split anywhere."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, Frame
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.sync.client import connect as ws_connect
from websockets.uri import parse_uri

import ipcwire
from ipcwire.errors import FrameTooLarge, Timeout
from ipcwire.ws._aio_channel import AioWsChannel
from ipcwire.ws._channel import WsChannel
from ipcwire.ws._fast import FAST, FastClientProtocol, FastServerProtocol


def test_the_fast_path_is_on_with_the_installed_websockets() -> None:
    """The test command installs a websockets the fast path knows. If this fails after an
    upgrade, ``_fast`` switched itself off (ipcwire still works, through the library's own
    classes, slower): adapt ``_fast.py`` to the new release rather than skipping these."""
    assert FAST


def _open(cls: type[Protocol], **kw: Any) -> Protocol:
    """A protocol object past its opening handshake (the frame loop running)."""
    if issubclass(cls, ClientProtocol):
        p: Protocol = cls(parse_uri("ws://x/"), **kw)
    else:
        p = cls(**kw)
    p.state = OPEN
    p.parser = p.parse()
    next(p.parser)
    return p


def _frames_in(p: Protocol) -> list[Frame]:
    events = p.events_received()
    assert all(isinstance(e, Frame) for e in events)
    return [e for e in events if isinstance(e, Frame)]


def _written_frames(p: Protocol) -> Any:
    """What a protocol wrote; a client's frames unmasked (their keys are random)."""
    data = p.data_to_send()
    if p.side.name == "SERVER":
        return b"".join(data)
    reader = _open(ServerProtocol, max_size=None)
    reader.receive_data(b"".join(data))
    return [(e.opcode, e.data, e.fin) for e in _frames_in(reader)], b"" in data


def _outcome(p: Protocol) -> tuple[Any, ...]:
    events = [(e.opcode, bytes(e.data), e.fin) for e in _frames_in(p)]
    exc = p.parser_exc
    return (
        events,
        _written_frames(p),
        p.state,
        p.current_size,
        type(exc).__name__ if exc else None,
        str(exc) if exc else None,
        p.close_sent,
    )


def _feed(p: Protocol, chunks: list[bytes], eof: bool) -> tuple[Any, ...]:
    out: list[Any] = []
    for chunk in chunks:
        if p.state.name == "CLOSED" or p.reader.eof:
            break
        p.receive_data(chunk)
        out.append(_outcome(p))
    if eof and not p.reader.eof:
        p.receive_eof()
        out.append(_outcome(p))
    return tuple(out)


def _splits(data: bytes, step: int) -> Iterator[list[bytes]]:
    yield [data]
    for cut in range(1, len(data), step):
        yield [data[:cut], data[cut:]]
    bytewise = [data[i : i + 1] for i in range(min(len(data), 300))]
    yield bytewise + ([data[300:]] if len(data) > 300 else [])


def _same(server: bool, stream: bytes, *, eof: bool = False, step: int = 1, **kw: Any) -> None:
    lib: type[Protocol] = ServerProtocol if server else ClientProtocol
    fast: type[Protocol] = FastServerProtocol if server else FastClientProtocol
    for chunks in _splits(stream, step):
        expected = _feed(_open(lib, **kw), chunks, eof)
        got = _feed(_open(fast, **kw), chunks, eof)
        assert got == expected, f"split {[len(c) for c in chunks][:5]}"


def _frames(server: bool, *frames: Frame) -> bytes:
    """What a peer writes: masked from a client (to a server), plain from a server."""
    out = []
    for f in frames:
        out.append(f.serialize(mask=server))
    return b"".join(out)


GOOD = [
    Frame(BINARY, b""),
    Frame(BINARY, b"x" * 125),
    Frame(TEXT, "é".encode() * 63),
    Frame(BINARY, os.urandom(126)),
    Frame(PING, b"ping"),
    Frame(BINARY, os.urandom(4096)),
    Frame(TEXT, b"part 1 ", fin=False),
    Frame(PING, b""),
    Frame(CONT, b"part 2 ", fin=False),
    Frame(PONG, b"unsolicited"),
    Frame(CONT, b"end", fin=True),
    Frame(BINARY, os.urandom(65536)),
]


@pytest.mark.parametrize("server", [True, False], ids=["server", "client"])
def test_good_frames_split_anywhere(server: bool) -> None:
    small = _frames(server, *GOOD[:11])
    _same(server, small)
    _same(server, small, eof=True, step=7)
    _same(server, _frames(server, GOOD[11], GOOD[0]), step=997)
    _same(server, _frames(server, *GOOD[:4], Frame(CLOSE, b"\x03\xe8bye")), step=3)


def _raw(opcode: int, data: bytes, *, masked: bool, fin: bool = True, rsv: int = 0) -> bytes:
    """A frame as bytes, whatever it breaks (RFC 6455 section 5.2), masked with 0x5a5a5a5a."""
    head = bytearray([(0x80 if fin else 0) | rsv | opcode])
    n = len(data)
    flag = 0x80 if masked else 0
    if n < 126:
        head.append(flag | n)
    elif n < 65536:
        head += bytes([flag | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([flag | 127]) + n.to_bytes(8, "big")
    if masked:
        head += b"\x5a" * 4
        data = bytes(b ^ 0x5A for b in data)
    return bytes(head) + data


BAD: dict[str, list[tuple[int, bytes, bool, int]]] = {  # (opcode, data, fin, rsv)
    "reserved bit": [(2, b"abc", True, 0x20)],
    "unknown opcode": [(3, b"abc", True, 0)],
    "continuation first": [(0, b"abc", True, 0)],
    "text inside a fragmented message": [(2, b"a", False, 0), (1, b"b", True, 0)],
    "long ping": [(9, b"p" * 126, True, 0)],
    "fragmented ping": [(9, b"p", False, 0)],
    "over max_size": [(2, b"b" * 2000, True, 0)],
    "fragments over max_size": [(2, b"b" * 600, False, 0), (0, b"c" * 600, True, 0)],
    "bad close code": [(8, b"\x03\xed", True, 0)],
}


def _bad_stream(name: str, server: bool) -> bytes:
    bad = b"".join(_raw(op, d, masked=server, fin=f, rsv=r) for op, d, f, r in BAD[name])
    lead = _raw(2, b"first", masked=server)
    return lead + bad + _raw(2, b"after", masked=server)


@pytest.mark.parametrize("name", list(BAD))
@pytest.mark.parametrize("server", [True, False], ids=["server", "client"])
def test_bad_frames_fail_as_the_library_does(name: str, server: bool) -> None:
    _same(server, _bad_stream(name, server), step=5, max_size=1024)


@pytest.mark.parametrize("server", [True, False], ids=["server", "client"])
def test_wrong_masking_and_truncated_frames(server: bool) -> None:
    wrong = _raw(2, b"abc", masked=not server)
    _same(server, _frames(server, Frame(BINARY, b"ok")) + wrong)
    whole = _frames(server, Frame(BINARY, b"ok"), Frame(BINARY, os.urandom(300)))
    for cut in range(len(whole)):
        _same(server, whole[:cut], eof=True, step=len(whole) + 1)


def _written(cls: type[Protocol], send: Callable[[Protocol], None]) -> bytes:
    p = _open(cls)
    send(p)
    return b"".join(p.data_to_send())


@pytest.mark.parametrize(
    "data",
    [b"", b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 65536, os.urandom(300_000)],
    ids=len,
)
def test_frames_written_are_the_librarys(data: bytes) -> None:
    for view in (data, bytearray(data), memoryview(data)):

        def binary(p: Protocol, v: Any = view) -> None:
            p.send_binary(v)

        def fragment(p: Protocol, v: Any = view) -> None:
            p.send_binary(v, fin=False)

        # unmasked (a server's): byte for byte the same
        assert _written(FastServerProtocol, binary) == _written(ServerProtocol, binary)
        # masked (a client's): the library's server reads back the same frame
        reader = _open(ServerProtocol, max_size=None)
        reader.receive_data(_written(FastClientProtocol, fragment))
        [frame] = _frames_in(reader)
        assert (frame.opcode, frame.data, frame.fin) == (BINARY, data, False)
    masked = _written(FastClientProtocol, lambda p: p.send_text(b"t" * 10))
    keys = {masked[2:6]}
    p = _open(FastClientProtocol)
    for _ in range(2000):  # past one batch of keys: they keep changing
        p.send_binary(b"k")
        keys.add(b"".join(p.data_to_send())[2:6])
    assert len(keys) > 1900


def test_pings_pongs_and_close_still_work_over_the_fast_path() -> None:
    with ipcwire.listen("ws://127.0.0.1:0/fast") as listener:
        # a plain websockets client: fragmented messages, pings, then a normal close
        with ws_connect(listener.url) as plain:
            server = listener.accept(timeout=10)
            plain.send([b"frag", b"mented", b"!"])
            plain.ping(b"are you there").wait(10)
            plain.send(b"x" * 200_000)
            assert server.recv(timeout=10) == b"fragmented!"
            assert server.recv() == b"x" * 200_000
            server.send(b"reply")
            assert plain.recv(10) == b"reply"
        with pytest.raises(ipcwire.EndOfChannel):
            server.recv(timeout=10)


def test_a_slow_reader_holds_the_sender_back(sock_dir: Path) -> None:
    """Backpressure: a peer that does not read makes send() block, and with a timeout raise
    Timeout, after a bounded amount (socket buffers and 16 queued frames), not after all."""
    url = f"ws+unix://{sock_dir}/slow.sock"
    # (close_timeout: the closes at the end wait for a closing handshake behind full buffers)
    with ipcwire.listen(url, max_frame=1 << 20, close_timeout=0.5) as listener:
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(listener.accept(timeout=10)))
        t.start()
        client = ipcwire.connect(listener.url, timeout=10, max_frame=1 << 20, close_timeout=0.5)
        t.join()
        server = box[0]
        chunk = os.urandom(64 * 1024)
        sent = 0
        with pytest.raises(Timeout):
            for sent in itertools.count():
                client.send(chunk, timeout=0.5)
                assert sent < 2000, "128 MiB went out to a peer that reads nothing"
        assert sent > 16
        client.close()
        server.close()


def test_oversized_message_still_refused_with_1009() -> None:
    with (
        ipcwire.listen("ws://127.0.0.1:0/big", max_frame=1000) as listener,
        ws_connect(listener.url, max_size=None) as plain,
    ):
        server = listener.accept(timeout=10)
        plain.send(b"ok")
        plain.send(b"z" * 1001)
        assert server.recv(timeout=10) == b"ok"
        with pytest.raises(FrameTooLarge):
            server.recv(timeout=10)
        with pytest.raises(Exception) as info:
            plain.recv(10)
        assert "1009" in str(info.value)


def test_asyncio_fast_paths_keep_pings_fragments_order_and_close() -> None:
    from websockets.asyncio.client import connect as aio_ws_connect

    from ipcwire import aio  # type: ignore[attr-defined,unused-ignore]

    async def main() -> None:
        listener = await aio.listen("ws://127.0.0.1:0/afast")
        try:
            async with aio_ws_connect(listener.url) as plain:
                server = await listener.accept(timeout=10)
                await plain.send([b"frag", b"mented", b"!"])
                await (await plain.ping(b"still there?"))
                for i in range(200):  # many queued at once: taken without the library's get
                    await plain.send(i.to_bytes(2, "big") * 100)
                await plain.send(b"y" * 300_000)
                assert await server.recv(timeout=10) == b"fragmented!"
                for i in range(200):
                    assert await server.recv(timeout=10) == i.to_bytes(2, "big") * 100
                assert await server.recv(timeout=10) == b"y" * 300_000
                for i in range(50):
                    await server.send(b"r%d" % i)
                for i in range(50):
                    assert await plain.recv() == b"r%d" % i
            with pytest.raises(ipcwire.EndOfChannel):
                await server.recv(timeout=10)
        finally:
            await listener.aclose()

    asyncio.run(main())


def test_asyncio_slow_reader_holds_the_sender_back(sock_dir: Path) -> None:
    from ipcwire import aio  # type: ignore[attr-defined,unused-ignore]

    async def main() -> None:
        # no keepalive: only close_timeout can end a close stuck behind unread data
        opts: dict[str, Any] = {"max_frame": 1 << 20, "close_timeout": 0.5, "ping_interval": None}
        listener = await aio.listen(f"ws+unix://{sock_dir}/aslow.sock", **opts)
        try:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            client = await aio.connect(listener.url, timeout=10, **opts)
            server = await accepting
            chunk = os.urandom(64 * 1024)
            sent = 0
            with pytest.raises(Timeout):
                for sent in itertools.count():
                    await client.send(chunk, timeout=0.5)
                    assert sent < 2000, "128 MiB went out to a peer that reads nothing"
            assert sent > 16
            # the client's close frame waits behind what the server left unread: the close
            # gives up after 2 x close_timeout and aborts (the guard only stops a hang)
            await asyncio.wait_for(client.aclose(), 60)
            await asyncio.wait_for(server.aclose(), 60)
        finally:
            await listener.aclose()

    asyncio.run(main())


def test_compression_takes_the_librarys_road_both_ways() -> None:
    from ipcwire import aio  # type: ignore[attr-defined,unused-ignore]

    big = b"compressible " * 20_000
    with ipcwire.listen("ws://127.0.0.1:0/z", compression="deflate") as listener:
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(listener.accept(timeout=10)))
        t.start()
        with ipcwire.connect(listener.url, timeout=10, compression="deflate") as client:
            t.join()
            with box[0] as server:
                assert isinstance(client, WsChannel)
                assert client._conn.protocol.extensions  # permessage-deflate on
                for msg in (b"", b"small", big):
                    client.send(msg, timeout=10)
                    assert server.recv(timeout=10) == msg
                    server.send(msg, timeout=10)
                    assert client.recv(timeout=10) == msg

    async def main() -> None:
        listener = await aio.listen("ws://127.0.0.1:0/az", compression="deflate")
        try:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            client = await aio.connect(listener.url, timeout=10, compression="deflate")
            server = await accepting
            assert isinstance(client, AioWsChannel)
            assert client._conn.protocol.extensions
            for msg in (b"", b"small", big):
                await client.send(msg, timeout=10)
                assert await server.recv(timeout=10) == msg
                await server.send(msg)
                assert await client.recv(timeout=10) == msg
            await client.aclose()
            await server.aclose()
        finally:
            await listener.aclose()

    asyncio.run(main())
