"""gRPC: plain grpcio clients, typed errors, deadlines, limits, TLS, safe binding, asyncio."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import msgspec
import pytest
from tests._codecs import FailsOnBad, areceive_all, receive_all

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel, Listener
from ipcwire.errors import (
    AddressInUse,
    AuthenticationFailed,
    ChannelBroken,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    HandshakeError,
    IpcwireError,
    LocalProtocolError,
    RemoteProtocolError,
    Timeout,
)

TOKEN = "gr-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def _echo(ch: Channel) -> None:
    for msg in ch:
        if msg == {"op": "sleep"}:
            threading.Event().wait(0.5)  # slower than the caller's deadline
        ch.send({"echo": msg})


@pytest.fixture
def echo() -> Iterator[Listener]:
    """A blocking JSON echo endpoint with a token and a 1000-byte limit."""
    with ipcwire.listen("grpc://127.0.0.1:0", codec="json", token=TOKEN, max_frame=1000) as lis:
        t = threading.Thread(target=lis.serve, args=(_echo,), daemon=True)
        t.start()
        yield lis
    t.join(5)


def _target(lis: Listener) -> str:
    return lis.url.removeprefix("grpc://")


def test_plain_grpcio_client(echo: Listener) -> None:
    """A client that no ipcwire code wrote: generic grpcio, bytes in and out."""
    with grpc.insecure_channel(_target(echo)) as ch:
        call = ch.unary_unary("/ipcwire.Channel/Call")
        reply = call(msgspec.json.encode({"op": "ping"}), metadata=AUTH, timeout=5)
        assert msgspec.json.decode(reply) == {"echo": {"op": "ping"}}

        with pytest.raises(grpc.RpcError) as info:
            call(b"{}", metadata=(("authorization", "Bearer wrong"),), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.RpcError) as info:  # over the server's max_frame
            call(b'"' + b"x" * 2000 + b'"', metadata=AUTH, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        with pytest.raises(grpc.RpcError) as info:  # past its deadline
            call(msgspec.json.encode({"op": "sleep"}), metadata=AUTH, timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        stream = ch.stream_stream("/ipcwire.Channel/Stream")
        replies = stream(iter([b"1", b"[2]"]), metadata=AUTH, timeout=5)
        assert [msgspec.json.decode(r) for r in replies] == [{"echo": 1}, {"echo": [2]}]

        # After all that, the server still serves.
        assert msgspec.json.decode(call(b"3", metadata=AUTH, timeout=5)) == {"echo": 3}


def test_typed_errors(echo: Listener) -> None:
    url = echo.url
    with pytest.raises(AuthenticationFailed, match="UNAUTHENTICATED"):
        ipcwire.connect(url, codec="json", token="wrong")
    with pytest.raises(HandshakeError, match="codec"):
        ipcwire.connect(url, codec="msgpack", token=TOKEN)
    with ipcwire.connect(url, codec="json", token=TOKEN) as ch:
        with pytest.raises(FrameTooLarge) as info:
            ch.send("y" * 2000)  # checked here against the limit the server announced
        assert info.value.limit == 1000
        assert ch.request({"ok": 1}, timeout=5) == {"echo": {"ok": 1}}
        with pytest.raises(Timeout, match="was closed"):
            ch.request({"op": "sleep"}, timeout=0.2)
        assert ch.closed
    with ipcwire.connect(url, codec="json", token=TOKEN, unary=True) as ch:
        with pytest.raises(Timeout, match="deadline"):
            ch.request({"op": "sleep"}, timeout=0.2)
        assert ch.request("again", timeout=5) == {"echo": "again"}
        ch.send(1)
        assert ch.recv(timeout=0) == {"echo": 1}
        with pytest.raises(LocalProtocolError, match="unary"):
            ch.recv(timeout=0)


def test_token_proof_and_refusals(sock_dir: Path) -> None:
    with (
        ipcwire.listen("grpc://127.0.0.1:0") as lis,
        pytest.raises(AuthenticationFailed, match="prove"),
    ):
        ipcwire.connect(lis.url, token="mine")
    with pytest.raises(ConnectionRefused):
        ipcwire.connect("grpc://127.0.0.1:9", timeout=5)
    with pytest.raises(ConnectionRefused):
        ipcwire.connect(f"grpc+unix://{sock_dir}/none.sock", timeout=5)


def test_not_an_ipcwire_server() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(RemoteProtocolError, match="UNIMPLEMENTED"):
            ipcwire.connect(f"grpc://127.0.0.1:{port}", timeout=5)
    finally:
        server.stop(None)


def test_unary_without_reply_and_server_close() -> None:
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:

        def handler(ch: Channel) -> None:
            msg = ch.recv(timeout=5)
            if msg == b"push":
                ch.send_many([b"a", b"b"])
            # b"quiet": no reply; the handler returns and the channel closes.

        t = threading.Thread(target=lis.serve, args=(handler,), daemon=True)
        t.start()
        with ipcwire.connect(lis.url, unary=True) as ch, pytest.raises(EndOfChannel):
            ch.request(b"quiet", timeout=5)
        with ipcwire.connect(lis.url) as ch:
            ch.send(b"push")
            got: list[bytes] = []
            while len(got) < 2:
                got += ch.recv_many(timeout=5)
            assert got == [b"a", b"b"]
            with pytest.raises(EndOfChannel):  # the handler returned: serve() closed it
                ch.recv(timeout=5)
    t.join(5)


def test_server_closes_then_client_send_breaks() -> None:
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lis.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lis.url) as ch:
            t.join()
            box[0].send(b"last words")
            box[0].close()
            assert ch.recv(timeout=5) == b"last words"
            with pytest.raises(EndOfChannel):
                ch.recv(timeout=5)
            with pytest.raises(ChannelBroken):
                ch.send(b"too late")


def test_tls(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    with ipcwire.listen("grpcs://127.0.0.1:0", certfile=cert, keyfile=key, codec="json") as lis:
        assert lis.url.startswith("grpcs://")
        t = threading.Thread(target=lis.serve, args=(_echo,), daemon=True)
        t.start()
        with ipcwire.connect(lis.url, cafile=cert, codec="json") as ch:
            assert ch.request({"tls": 1}, timeout=5) == {"echo": {"tls": 1}}
        with pytest.raises(AuthenticationFailed, match="certificate"):
            ipcwire.connect(lis.url, codec="json", timeout=5)  # system CAs do not know it
    t.join(5)


def test_binding_is_safe(sock_dir: Path) -> None:
    path = sock_dir / "g.sock"
    with ipcwire.listen(f"grpc+unix://{path}") as lis:
        assert path.stat().st_mode & 0o777 == 0o600
        with pytest.raises(AddressInUse, match="this process already listens at"):
            ipcwire.listen(f"grpc+unix://{path}")  # never steals a live endpoint
        assert lis.url == f"grpc+unix://{path}"
    assert not path.exists()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a file nothing answers at: removed, then bound
    with ipcwire.listen(f"grpc+unix://{path}"):
        pass
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    with pytest.raises(AddressInUse, match=str(port)):
        ipcwire.listen(f"grpc://127.0.0.1:{port}")
    holder.close()


def test_asyncio_listener_with_a_plain_client() -> None:
    """A plain grpc.aio client streams two requests, half-closes, then reads the replies."""

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0", codec="json") as lis:

            async def handler(ch: aio.AioChannel) -> None:
                async for msg in ch:
                    await ch.send({"echo": msg})

            serving = asyncio.ensure_future(lis.serve(handler))
            async with grpc.aio.insecure_channel(lis.url.removeprefix("grpc://")) as gch:
                call = gch.stream_stream("/ipcwire.Channel/Stream")(timeout=5)
                await call.write(b"1")
                await call.write(b'"two"')
                await call.done_writing()
                replies = [msgspec.json.decode(r) async for r in call]
                assert replies == [{"echo": 1}, {"echo": "two"}]
                unary = gch.unary_unary("/ipcwire.Channel/Call")
                assert msgspec.json.decode(await unary(b"3", timeout=5)) == {"echo": 3}
            lis.close()
            await asyncio.wait_for(serving, 10)

    asyncio.run(main())


def test_asyncio_errors_deadlines_and_push() -> None:
    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0", codec="json", token=TOKEN) as lis:

            async def handler(ch: aio.AioChannel) -> None:
                async for msg in ch:
                    if msg == "sleep":
                        await asyncio.sleep(0.5)
                    await ch.send({"echo": msg})

            serving = asyncio.ensure_future(lis.serve(handler))
            with pytest.raises(AuthenticationFailed):
                await aio.connect(lis.url, codec="json", token="bad")
            async with await aio.connect(lis.url, codec="json", token=TOKEN, unary=True) as u:
                with pytest.raises(Timeout, match="deadline"):
                    await u.request("sleep", timeout=0.2)
                assert await u.request("fine", timeout=5) == {"echo": "fine"}
            async with await aio.connect(lis.url, codec="json", token=TOKEN, max_frame=100) as ch:
                await ch.send("hi")
                assert await ch.recv(timeout=5) == {"echo": "hi"}
                with pytest.raises(Timeout, match="was closed"):
                    await ch.request("sleep", timeout=0.2)
            lis.close()
            await asyncio.wait_for(serving, 10)

    asyncio.run(main())


def test_asyncio_senders_take_turns() -> None:
    """Tasks sending on one channel at once (send with and without a timeout, send_many):
    every message arrives whole, each task's in order. A sender that waits for room times
    out with its message not sent, or is cancelled, and the channel keeps working."""

    async def main() -> None:
        async with (
            await aio.listen("grpc://127.0.0.1:0") as lis,
            await aio.connect(lis.url) as cl,
            await lis.accept(timeout=10) as sv,
        ):

            async def sender(k: int) -> None:
                for i in range(50):
                    m = bytes([k, i]) * 100
                    if i % 3 == 0:
                        await cl.send(m)
                    elif i % 3 == 1:
                        await cl.send(m, timeout=10)
                    else:
                        await cl.send_many([m])

            await asyncio.gather(*(sender(k) for k in range(4)))
            got = [await sv.recv(timeout=10) for _ in range(200)]
            for k in range(4):
                assert [m for m in got if m[0] == k] == [bytes([k, i]) * 100 for i in range(50)]

            assert cl.statistics().messages_sent == 200

            # A big message waits for the server to read (this server has never read, so
            # gRPC's flow control holds the write); the queue is over its bound meanwhile, so
            # the next senders wait for room: one with a timeout gets Timeout with its message
            # not sent; one cancelled leaves the channel working.
            async with await aio.connect(lis.url) as cl2, await lis.accept(timeout=10) as sv2:
                big = b"b" * (24 * 1024 * 1024)
                first = asyncio.ensure_future(cl2.send(big))
                waiting = asyncio.Event()

                async def second() -> None:
                    waiting.set()
                    await cl2.send(b"never")

                task = asyncio.ensure_future(second())
                await waiting.wait()  # second() is now parked, waiting for room
                with pytest.raises(Timeout, match=r"is not reading: 1 messages .* not sent"):
                    await cl2.send(b"late", timeout=0.2)
                assert not first.done() and not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert await sv2.recv() == big
                await first
                await cl2.send(b"after")
                assert await sv2.recv() == b"after"
                assert cl2.statistics().messages_sent == 2

    asyncio.run(main())


ANSWERED = r"already answered: a unary call gets one reply \(clients that open a stream"


def test_a_unary_call_gets_one_reply_blocking() -> None:
    seen: list[IpcwireError] = []

    def handler(ch: Channel) -> None:
        ch.send(ch.recv(timeout=5))
        for again in (lambda: ch.send(b"second"), lambda: ch.recv(timeout=5)):
            try:
                again()
            except IpcwireError as exc:
                seen.append(exc)

    with ipcwire.listen("grpc://127.0.0.1:0") as lis:
        t = threading.Thread(target=lis.serve, args=(handler,), daemon=True)
        t.start()
        with ipcwire.connect(lis.url, unary=True) as ch:
            assert ch.request(b"first", timeout=5) == b"first"
        lis.close()
        t.join(10)
    assert [type(e) for e in seen] == [LocalProtocolError, EndOfChannel]
    assert re.search(ANSWERED, str(seen[0])) and seen[0].endpoint == lis.url


def test_a_unary_call_gets_one_reply_asyncio() -> None:
    seen: list[IpcwireError] = []

    async def main() -> str:
        async with await aio.listen("grpc://127.0.0.1:0") as lis:

            async def handler(ch: aio.AioChannel) -> None:
                await ch.send(await ch.recv(timeout=5))
                try:
                    await ch.send(b"second")
                except IpcwireError as exc:
                    seen.append(exc)
                try:
                    await ch.recv(timeout=5)
                except IpcwireError as exc:
                    seen.append(exc)

            serving = asyncio.ensure_future(lis.serve(handler))
            async with await aio.connect(lis.url, unary=True) as ch:
                assert await ch.request(b"first", timeout=5) == b"first"
            lis.close()
            await asyncio.wait_for(serving, 10)
            return lis.url

    url = asyncio.run(main())
    assert [type(e) for e in seen] == [LocalProtocolError, EndOfChannel]
    assert re.search(ANSWERED, str(seen[0])) and seen[0].endpoint == url


def test_a_max_frame_that_is_not_a_number_is_not_an_ipcwire_server() -> None:
    """int() takes '²' and refuses 5000 digits with ValueError; neither reaches the user."""
    from ipcwire._core.url import parse_url
    from ipcwire.grpc._protocol import MAX_FRAME_KEY, check_welcome, frame_limit
    from ipcwire.options import ChannelOptions

    assert frame_limit("65536") == 65536
    for raw in ("²", "9" * 5000, "-1", "", " 1", None):
        assert frame_limit(raw) is None
    options = ChannelOptions.build(parse_url("grpc://127.0.0.1:1"), {})
    for raw in ("²", "9" * 5000):
        with pytest.raises(RemoteProtocolError, match="not an ipcwire gRPC endpoint"):
            check_welcome({MAX_FRAME_KEY: raw}, options, "grpc://127.0.0.1:1", b"n")


def test_a_message_that_does_not_decode_in_a_batch_loses_no_other() -> None:
    """recv_many decoded what it took from the inbox in one go, so a message that does not
    decode lost the others taken with it. Now those before it come first, then its error,
    then the rest."""
    codec = FailsOnBad()
    with ipcwire.listen("grpc://127.0.0.1:0", codec=codec) as lst:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lst.url, codec=codec, timeout=10) as client:
            client.send(b"start")
            t.join()
            with box[0] as server:
                assert server.recv(timeout=10) == b"start"
                client.send_many([b"a", b"bad", b"c", b"end"])
                assert receive_all(server) == [b"a", "error", b"c", b"end"]
                server.send_many([b"a", b"bad", b"c", b"end"])
                assert receive_all(client) == [b"a", "error", b"c", b"end"]

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0", codec=codec) as lst:
            accepting = asyncio.ensure_future(lst.accept(timeout=10))
            c = await aio.connect(lst.url, codec=codec, timeout=10)
            await c.send(b"start")
            s = await accepting
            async with c, s:
                assert await s.recv(timeout=10) == b"start"
                await c.send_many([b"a", b"bad", b"c", b"end"])
                assert await areceive_all(s, timeout=10) == [b"a", "error", b"c", b"end"]

    asyncio.run(main())
