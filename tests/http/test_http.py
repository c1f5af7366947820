"""The HTTP mechanism through ipcwire's own clients: typed errors, modes, TLS, Unix sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
from pathlib import Path

import pytest
from tests._codecs import FailsOnBad, areceive_all, receive_all
from tests._proc import wait_until
from tests._slowloris import slow_head

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel, Listener
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    HandshakeError,
    LocalProtocolError,
    PermissionDenied,
    RemoteProtocolError,
    Timeout,
)


def _serve(lis: Listener) -> threading.Thread:
    def echo(ch: Channel) -> None:
        for msg in ch:
            ch.send(msg)

    t = threading.Thread(target=lis.serve, args=(echo,), daemon=True)
    t.start()
    return t


def test_wrong_token_codec_and_size_are_typed(json_echo: Listener) -> None:
    url = json_echo.url
    with pytest.raises(AuthenticationFailed, match="401"):
        ipcwire.connect(url, codec="json", token="wrong")
    with pytest.raises(AuthenticationFailed):
        ipcwire.connect(url, codec="json")
    with pytest.raises(HandshakeError, match="codec"):
        ipcwire.connect(url, codec="msgpack", token="s3cret")
    with ipcwire.connect(url, codec="json", token="s3cret") as ch:
        with pytest.raises(FrameTooLarge) as info:  # the server said its limit at connect
            ch.send("x" * 2000)
        assert info.value.limit == 1000
        assert ch.request({"still": "fine"}, timeout=5) == {"echo": {"still": "fine"}}


def test_server_enforces_its_limit_for_plain_clients(json_echo: Listener) -> None:
    # session=False learns nothing at connect: the server's 413 comes back as FrameTooLarge.
    with ipcwire.connect(json_echo.url, codec="json", token="s3cret", session=False) as ch:
        with pytest.raises(FrameTooLarge) as info:
            ch.request("y" * 5000, timeout=5)
        assert info.value.limit == 1000 and info.value.size > 5000
        assert ch.request(1, timeout=5) == {"echo": 1}
        ch.send(2)  # plain mode: the reply is queued for recv()
        assert ch.recv(timeout=0) == {"echo": 2}
        with pytest.raises(LocalProtocolError, match="plain HTTP"):
            ch.recv(timeout=0)


def test_client_with_token_refuses_server_without() -> None:
    with (
        ipcwire.listen("http://127.0.0.1:0/") as lis,
        pytest.raises(AuthenticationFailed, match="prove"),
    ):
        ipcwire.connect(lis.url, token="mine")


def test_nothing_listening_is_connection_refused(sock_dir: Path) -> None:
    with pytest.raises(ConnectionRefused):
        ipcwire.connect("http://127.0.0.1:9/", timeout=2)
    with pytest.raises(ConnectionRefused, match="no socket"):
        ipcwire.connect(f"http+unix://{sock_dir}/none.sock", timeout=2)


def test_not_an_ipcwire_path(json_echo: Listener) -> None:
    with pytest.raises(RemoteProtocolError, match="404"):
        ipcwire.connect(json_echo.url + "/elsewhere", codec="json", token="s3cret")


def test_server_speaks_first_and_closes() -> None:
    with ipcwire.listen("http://127.0.0.1:0/", codec="json") as lis:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lis.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lis.url, codec="json") as ch:
            t.join()
            server = box[0]
            server.send_many([{"n": i} for i in range(3)])  # before the client asked
            assert ch.recv_many(timeout=5) == [{"n": 0}, {"n": 1}, {"n": 2}]
            server.send("bye")
            server.close()
            assert ch.recv(timeout=5) == "bye"
            with pytest.raises(EndOfChannel):
                ch.recv(timeout=5)
            with pytest.raises(ChannelBroken):
                ch.send("anyone?")


def test_recv_without_timeout_reads_in_the_callers_thread() -> None:
    """recv() with no timeout reads the stream itself (no reader thread) until a recv() with
    a timeout hands it to a reader thread; messages, the end, and close() from another
    thread behave the same either way."""
    with ipcwire.listen("http://127.0.0.1:0/") as lis:
        with ipcwire.connect(lis.url) as ch, lis.accept(timeout=10) as server:
            server.send_many([b"a", b"b"])
            assert ch.recv() == b"a"
            assert ch.recv_many() == [b"b"]
            assert not any(t.name.startswith("ipcwire reader") for t in threading.enumerate())
            server.send(b"c")
            assert ch.recv(timeout=5) == b"c"  # now the reader thread takes over
            server.send_many([b"d", b"e"])
            server.close()
            assert list(ch) == [b"d", b"e"]  # to EndOfChannel
        with ipcwire.connect(lis.url) as ch, lis.accept(timeout=10) as server:
            server.send(b"first")
            assert ch.recv() == b"first"
            got: list[BaseException] = []

            def receive() -> None:
                try:
                    ch.recv()
                except BaseException as exc:
                    got.append(exc)

            t = threading.Thread(target=receive)
            t.start()
            while not t.is_alive() or not ch._recv_lock.locked():  # type: ignore[attr-defined]
                t.join(0.001)
            ch.close()
            t.join(10)
            assert not t.is_alive()
            assert isinstance(got[0], ChannelClosed)


def test_recv_posts_a_waiting_message_unless_the_server_is_full() -> None:
    """recv() posts the one message send() queued when the sender thread has not taken it
    (white box: queued without waking the sender); it asks the server not to wait, so a
    server whose application queue is full answers 504, nothing is delivered twice or lost,
    and the sender thread posts it once there is room."""
    with (
        ipcwire.listen("http://127.0.0.1:0/") as lis,
        ipcwire.connect(lis.url) as ch,
        lis.accept(timeout=10) as server,
    ):
        big = [bytes([i]) * (1 << 20) for i in range(5)]  # 5 MiB: the server is full
        ch.send_many(big)
        ch._flush(10)  # type: ignore[attr-defined]
        core = ch._core  # type: ignore[attr-defined]
        with ch._out:  # type: ignore[attr-defined]
            core.queue([b"last"])  # the sender thread is not told
        ch._post_here()  # type: ignore[attr-defined]
        assert list(core.outbox) == [b"last"]  # refused (504): still queued
        assert [server.recv(timeout=10) for _ in range(6)] == [*big, b"last"]
        server.send(b"reply")
        ch.send(b"again")  # queued; recv() or the sender thread posts it, once
        assert ch.recv() == b"reply"
        assert server.recv(timeout=10) == b"again"
        with pytest.raises(Timeout):
            server.recv(timeout=0.2)


def test_full_duplex_flood_does_not_block() -> None:
    """One thread sends more than both sides buffer while another receives without a
    timeout (so recv() also posts) and the server echoes: everything arrives, in order."""
    n, size = 100, 64 * 1024  # 6.4 MiB each way, over the 4 MiB queues
    with ipcwire.listen("http://127.0.0.1:0/") as lis:
        echo = _serve(lis)
        with ipcwire.connect(lis.url) as ch:
            got: list[bytes] = []
            reader = threading.Thread(target=lambda: got.extend(ch.recv() for _ in range(n)))
            reader.start()
            for i in range(n):
                ch.send(i.to_bytes(4, "big") * (size // 4), timeout=30)
            reader.join(60)
            assert not reader.is_alive()
            assert got == [i.to_bytes(4, "big") * (size // 4) for i in range(n)]
    echo.join(10)


def test_request_timeout_closes_the_channel() -> None:
    with ipcwire.listen("http://127.0.0.1:0/") as lis:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lis.accept(timeout=10)))
        t.start()
        ch = ipcwire.connect(lis.url)
        t.join()
        with pytest.raises(Timeout, match="was closed"):
            ch.request(b"no answer", timeout=0.2)
        assert ch.closed
        with pytest.raises(ChannelClosed):
            ch.send(b"x")
        assert box[0].recv(timeout=5) == b"no answer"
        with pytest.raises(EndOfChannel):  # the client deleted its channel on close
            box[0].recv(timeout=5)


def test_idle_channels_expire(sock_dir: Path) -> None:
    url = f"http+unix://{sock_dir}/e.sock"
    with ipcwire.listen(url, session_timeout=0.3) as lis:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lis.accept(timeout=10)))
        t.start()
        with ipcwire.connect(url) as ch:
            t.join()
            with pytest.raises(ChannelBroken, match="session_timeout"):
                box[0].recv(timeout=10)  # the client went quiet: the server gives up on it
            with pytest.raises(ChannelBroken, match="expired"):
                ch.request(b"late", timeout=5)


def test_slow_server_slows_the_client() -> None:
    with ipcwire.listen("http://127.0.0.1:0/") as lis:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lis.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lis.url) as ch:
            t.join()
            chunk = bytes(1 << 20)
            sent = 0
            with pytest.raises(Timeout, match="not taking messages"):
                for _ in range(30):
                    ch.send(chunk, timeout=0.3)
                    sent += 1
            # ~4 MiB queued at the server, ~4 MiB in the client's queue, then it pushes back.
            assert 5 <= sent <= 12
            got: list[bytes] = []
            while len(got) < sent:
                got += box[0].recv_many(timeout=5)
            assert len(got) == sent
            ch.send(b"after", timeout=5)
            assert box[0].recv(timeout=5) == b"after"


def test_unix_peer_credentials_and_allow_uids(sock_dir: Path) -> None:
    url = f"http+unix://{sock_dir}/p.sock"
    with ipcwire.listen(url, allow_uids=[os.getuid()]) as lis:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lis.accept(timeout=10)))
        t.start()
        with ipcwire.connect(url):
            t.join()
            peer = box[0].peer
            assert peer is not None and peer.pid == os.getpid() and peer.uid == os.getuid()
        assert (sock_dir / "p.sock").stat().st_mode & 0o777 == 0o600
    with (
        ipcwire.listen(url, allow_uids=[os.getuid() + 1]),
        pytest.raises(PermissionDenied, match="allow_uids") as err,
    ):
        ipcwire.connect(url)
    # the refused client is not told who is allowed (the server's log says)
    assert f"does not allow uid {os.getuid()}" in str(err.value)
    assert f"[{os.getuid() + 1}]" not in str(err.value), err.value
    assert not (sock_dir / "p.sock").exists()


def test_https(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    with ipcwire.listen("https://127.0.0.1:0/secure", ssl=server_tls, codec="json") as lis:
        _serve(lis)
        assert lis.url.startswith("https://")
        with ipcwire.connect(lis.url, ssl=client_tls, codec="json") as ch:
            assert ch.request({"tls": True}, timeout=5) == {"tls": True}
        with pytest.raises(AuthenticationFailed, match="certificate"):
            ipcwire.connect(lis.url, codec="json", timeout=5)  # system CAs do not know it


def test_asyncio_errors_push_and_timeout() -> None:
    async def main() -> None:
        async with await aio.listen("http://127.0.0.1:0/a", codec="json", token="t0k") as lis:
            with pytest.raises(AuthenticationFailed):
                await aio.connect(lis.url, codec="json", token="bad")
            accepting = asyncio.ensure_future(lis.accept(timeout=10))
            async with await aio.connect(
                lis.url, codec="json", token="t0k", max_frame=10_000
            ) as ch:
                server = await accepting
                await server.send({"first": "from the server"})
                assert await ch.recv(timeout=5) == {"first": "from the server"}
                with pytest.raises(FrameTooLarge):
                    await server.send("x" * 20_000)  # over the client's max_frame
                with pytest.raises(Timeout, match="was closed"):
                    await ch.request("unanswered", timeout=0.2)
                assert ch.closed
                assert await server.recv(timeout=5) == "unanswered"
                with pytest.raises(EndOfChannel):
                    await server.recv(timeout=5)

    asyncio.run(main())


def _two_replies(ch: Channel) -> None:
    for msg in ch:
        ch.send(msg + b"-1")
        ch.send(msg + b"-2")


def test_send_then_recv_is_one_exchange_in_order() -> None:
    """While no stream is open, recv() gets the reply in the response to the POST of what
    send() queued (white box: the stream stays closed). A server that answers twice: the
    second reply is the next recv()'s, in order, with or without the stream."""
    with ipcwire.listen("http://127.0.0.1:0/") as lis:
        _serve(lis)
        with ipcwire.connect(lis.url) as ch:
            for i in range(20):
                ch.send(b"%d" % i)
                assert ch.recv() == b"%d" % i
            assert not ch._core.streaming  # type: ignore[attr-defined]
    with ipcwire.listen("http://127.0.0.1:0/") as lis:
        t = threading.Thread(target=lis.serve, args=(_two_replies,), daemon=True)
        t.start()
        with ipcwire.connect(lis.url) as ch:
            got = []
            for i in range(10):
                ch.send(b"%d" % i)
                got += [ch.recv(), ch.recv()]
            assert got == [b"%d-%d" % (i, k) for i in range(10) for k in (1, 2)]


def test_asyncio_send_then_recv_is_one_exchange_in_order() -> None:
    async def main() -> None:
        lis = await aio.listen("http://127.0.0.1:0/")

        async def serve() -> None:
            server = await lis.accept(timeout=10)
            async for msg in server:
                await server.send(msg + b"-1")
                await server.send(msg + b"-2")

        task = asyncio.get_running_loop().create_task(serve())
        ch = await aio.connect(lis.url)
        got = []
        for i in range(10):
            await ch.send(b"%d" % i)
            got.append(await ch.recv())
        assert not ch._core.streaming  # type: ignore[attr-defined]
        got += [await ch.recv() for _ in range(10)]  # the rest, in order
        assert got == [b"%d-%d" % (i, k) for i in range(10) for k in (1, 2)]
        with pytest.raises(Timeout):
            await ch.recv(timeout=0.1)  # nothing to post: the stream is opened, and is quiet
        assert ch._core.streaming  # type: ignore[attr-defined]
        await ch.send(b"x")
        assert [await ch.recv(), await ch.recv()] == [b"x-1", b"x-2"]
        await ch.aclose()
        await lis.aclose()
        task.cancel()

    asyncio.run(main())


def test_batches_with_large_messages_arrive_whole() -> None:
    """send_many with messages of over 64 KiB (each its own chunk of the batch body) mixed
    with small ones: the server splits them as the body arrives, whatever the chunking."""
    sizes = [3, 70_000, 0, 5, 200_000, 1, 65_536, 9]
    msgs = [bytes([i]) * n for i, n in enumerate(sizes)]
    with ipcwire.listen("http://127.0.0.1:0/") as lis:
        _serve(lis)
        with ipcwire.connect(lis.url) as ch:
            ch.send_many(msgs)
            assert [ch.recv(timeout=10) for _ in msgs] == msgs


def test_frame_splitter_any_chunking() -> None:
    from ipcwire.http._frames import FrameSplitter, batch_chunks

    msgs = [b"", b"a", bytes(range(256)) * 300, b"bc", bytes(70_000)]
    chunks, size = batch_chunks(msgs)
    body = b"".join(chunks)
    assert len(body) == size
    for step in (1, 3, 4, 5, 4096, 65_536, len(body)):
        splitter = FrameSplitter(1 << 20, "test")
        for pos in range(0, len(body), step):
            splitter.feed(body[pos : pos + step])
        assert splitter.out == msgs
        assert not splitter.partial
    splitter = FrameSplitter(1 << 20, "test")
    splitter.feed(body[:-1])
    assert splitter.partial
    with pytest.raises(FrameTooLarge):
        FrameSplitter(10, "test").feed(body)


def test_reply_header_with_bare_httpx() -> None:
    """Ipcwire-Reply on POST .../messages: 200 with the server's next message when it comes
    in time, else 204 (delivered all the same); a bad value is 400."""
    import httpx

    with ipcwire.listen("http://127.0.0.1:0/api") as lis, httpx.Client(timeout=10) as http:
        opened = http.post(lis.url + "/channels", json={"ipcwire": 1, "codec": "bytes"})
        assert opened.status_code == 201
        url = f"{lis.url}/channels/{opened.json()['channel']}/messages"
        server = lis.accept(timeout=10)
        box: list[bytes] = []

        def answer() -> None:
            box.append(server.recv(timeout=10))
            server.send(b"answer")

        t = threading.Thread(target=answer)
        t.start()
        r = http.post(url, content=b"question", headers={"Ipcwire-Reply": "10"})
        t.join(10)
        assert (r.status_code, r.content, box) == (200, b"answer", [b"question"])
        r = http.post(url, content=b"quiet", headers={"Ipcwire-Reply": "0.1"})
        assert r.status_code == 204
        assert server.recv(timeout=10) == b"quiet"
        r = http.post(url, content=b"x", headers={"Ipcwire-Reply": "soon"})
        assert r.status_code == 400
        server.close()


def test_asyncio_recv_timeout_while_the_reply_is_awaited() -> None:
    """A recv() that times out while the sender's post waits for the reply: the reply comes
    later and the next recv() returns it; sends made meanwhile arrive after, in order."""

    async def main() -> None:
        lis = await aio.listen("http://127.0.0.1:0/")
        go = asyncio.Event()

        async def serve() -> None:
            server = await lis.accept(timeout=10)
            first = await server.recv()
            await go.wait()
            await server.send(first + b"-late")
            async for msg in server:
                await server.send(msg + b"-ok")

        task = asyncio.get_running_loop().create_task(serve())
        ch = await aio.connect(lis.url)
        await ch.send(b"a")
        with pytest.raises(Timeout):
            await ch.recv(timeout=0.2)
        await ch.send(b"b")  # queued behind the post that waits for the reply
        go.set()
        assert await ch.recv(timeout=10) == b"a-late"
        assert await ch.recv(timeout=10) == b"b-ok"
        await ch.send(b"c")
        assert await ch.recv(timeout=10) == b"c-ok"
        await ch.aclose()
        await lis.aclose()
        task.cancel()

    asyncio.run(main())


def test_recv_polls_when_the_sender_thread_posts_first() -> None:
    """The sender thread took what send() queued (white box: its post waits for room on a
    full server): recv() long-polls for the reply in parallel instead of opening the stream
    for good, and the next round trips are one exchange again."""
    with (
        ipcwire.listen("http://127.0.0.1:0/") as lis,
        ipcwire.connect(lis.url) as ch,
        lis.accept(timeout=10) as server,
    ):
        big = [bytes([i]) * (1 << 20) for i in range(5)]  # 5 MiB: the server is full
        ch.send_many(big)
        ch._flush(10)  # type: ignore[attr-defined]
        ch.send(b"q")
        assert wait_until(lambda: ch._posting)  # type: ignore[attr-defined]  # post under way
        box: list[bytes] = []
        t = threading.Thread(target=lambda: box.append(ch.recv()))
        t.start()
        session = server._session  # type: ignore[attr-defined]
        assert wait_until(lambda: session.polls)  # the long poll waits for the reply
        assert [server.recv(timeout=10) for _ in range(6)] == [*big, b"q"]
        server.send(b"reply")
        t.join(10)
        assert box == [b"reply"]
        assert not ch._core.streaming  # type: ignore[attr-defined]
        for i in range(3):
            ch.send(b"%d" % i)
            assert server.recv(timeout=10) == b"%d" % i
            server.send(b"r%d" % i)
            assert ch.recv() == b"r%d" % i
        assert not ch._core.streaming  # type: ignore[attr-defined]


def test_a_reply_that_does_not_decode_in_a_batch_loses_no_other() -> None:
    """The client's recv_many took every message the stream had brought and decoded them in
    one go (asyncio: one at a time, but raising out of the batch), so a message that does
    not decode lost the others taken with it. Now those before it come first, then its
    error, then the rest."""
    codec = FailsOnBad()
    with ipcwire.listen("http://127.0.0.1:0", codec=codec) as lst:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lst.url, codec=codec, timeout=10) as client:
            client.send(b"start")
            t.join()
            with box[0] as server:
                assert server.recv(timeout=10) == b"start"
                server.send_many([b"a", b"bad", b"c", b"end"])
                assert receive_all(client, timeout=10) == [b"a", "error", b"c", b"end"]

    async def main() -> None:
        async with await aio.listen("http://127.0.0.1:0", codec=codec) as lst:
            accepting = asyncio.ensure_future(lst.accept(timeout=10))
            c = await aio.connect(lst.url, codec=codec, timeout=10)
            await c.send(b"start")
            s = await accepting
            async with c, s:
                assert await s.recv(timeout=10) == b"start"
                await s.send_many([b"a", b"bad", b"c", b"end"])
                assert await areceive_all(c, timeout=10) == [b"a", "error", b"c", b"end"]

    asyncio.run(main())


HALF_HEAD = b"POST /api HTTP/1.1\r\nHost: x\r\nX-Rest-Comes: "


def test_a_client_that_never_finishes_its_request_head_is_dropped() -> None:
    """aiohttp's low-level server keeps a connection that sends nothing, or trickles its
    headers (slowloris), for its keepalive_timeout: an hour by default, a descriptor each.
    Now the head must come within handshake_timeout (as a WebSocket upgrade must), both
    drivers; an ipcwire client keeps working."""
    with ipcwire.listen("http://127.0.0.1:0/api", handshake_timeout=0.3) as lis:
        _serve(lis)
        assert slow_head(lis.url, HALF_HEAD) == b""
        with ipcwire.connect(lis.url, timeout=10) as ch:
            assert ch.request(b"still served", timeout=10) == b"still served"

    async def main() -> None:
        async with await aio.listen("http://127.0.0.1:0/api", handshake_timeout=0.3) as alis:
            assert await asyncio.to_thread(slow_head, alis.url, HALF_HEAD) == b""

    asyncio.run(main())


def _stalled_body(url: str, head: bytes) -> bytes:
    """Send a request head and the start of its body, then nothing: what the server says."""
    host, port = url.split("//")[1].split("/", maxsplit=1)[0].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head)
        sock.settimeout(20)  # a guard: the listener's limit is 0.3 s
        return sock.recv(4096).split(b"\r\n", 1)[0]


def test_a_client_that_stalls_in_its_body_gets_408() -> None:
    """A request head that promised a body, then silence (a stalled or vanished client):
    the server waited for the body for ever, holding the request (and for a channel's
    send, keeping the channel from expiring). Now each part of a body must come within
    handshake_timeout: 408, both drivers, Content-Length and chunked bodies."""
    heads = [
        b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
        b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ]
    with ipcwire.listen("http://127.0.0.1:0/api", handshake_timeout=0.3) as lis:
        _serve(lis)
        for head in heads:
            assert _stalled_body(lis.url, head) == b"HTTP/1.1 408 Request Timeout"
        with ipcwire.connect(lis.url, timeout=10) as ch:
            assert ch.request(b"still served", timeout=10) == b"still served"

    async def main() -> None:
        async with await aio.listen("http://127.0.0.1:0/api", handshake_timeout=0.3) as alis:
            for head in heads:
                status = await asyncio.to_thread(_stalled_body, alis.url, head)
                assert status == b"HTTP/1.1 408 Request Timeout"

    asyncio.run(main())


def test_a_server_killed_under_an_open_channel_is_not_called_never_started(
    tmp_path: Path,
) -> None:
    """After kill -9 of the server, the client's error said "start the server first, or pass
    reconnect=": advice for a first connect, not for a channel that was open."""
    from tests._proc import child, kill9, wait_line

    url = f"http+unix://{tmp_path}/h.sock"
    server = f"""
import ipcwire
with ipcwire.listen({url!r}) as lst:
    print("ready", flush=True)
    with lst.accept(timeout=30) as ch:
        for m in ch:
            ch.send(m)
"""
    with child(server) as proc:
        assert wait_line(proc) == "ready"
        with ipcwire.connect(url, timeout=10) as ch:
            assert ch.request(b"ping", timeout=10) == b"ping"
            kill9(proc)
            with pytest.raises(ChannelBroken) as err:
                ch.request(b"again", timeout=10)
    assert "start the server first" not in str(err.value)
    assert url in str(err.value)


def test_a_plain_client_survives_a_server_error() -> None:
    """session=False: a 500 for one request (any HTTP server's handler failing) broke the
    client for good; each request stands alone, so the next one goes through. So does the
    next send() after a send() answered 500 (send() and then recv() is the other way to ask:
    the request() case was fixed, the send() one still broke the client)."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = 500 if body == b"boom" else 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/rpc"
        with ipcwire.connect(url, session=False, timeout=10) as ch:
            assert ch.request(b"one", timeout=10) == b"one"
            with pytest.raises(ChannelBroken):
                ch.request(b"boom", timeout=10)
            assert ch.request(b"two", timeout=10) == b"two"
            with pytest.raises(ChannelBroken):
                ch.send(b"boom", timeout=10)
            ch.send(b"three", timeout=10)
            assert ch.recv(timeout=10) == b"three"
    finally:
        server.shutdown()
        server.server_close()
        t.join(10)

    async def main() -> None:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        t = threading.Thread(target=server.serve_forever, daemon=True)
        t.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/rpc"
            async with await aio.connect(url, session=False, timeout=10) as ch:
                with pytest.raises(ChannelBroken):
                    await ch.request(b"boom", timeout=10)
                assert await ch.request(b"two", timeout=10) == b"two"
                with pytest.raises(ChannelBroken):
                    await ch.send(b"boom", timeout=10)
                await ch.send(b"three", timeout=10)
                assert await ch.recv(timeout=10) == b"three"
        finally:
            server.shutdown()
            server.server_close()
            t.join(10)

    asyncio.run(main())


def test_an_open_with_a_nonce_that_is_not_hex_leaves_no_channel_behind() -> None:
    """The 400 came after the channel's session was stored: it held a place (max_channels=)
    until it expired, though no client could ever use it."""
    import httpx

    with (
        ipcwire.listen("http://127.0.0.1:0/api", token="t0k", max_channels=1) as lis,
        httpx.Client(timeout=10) as http,
    ):
        hello = {"ipcwire": 1, "codec": "bytes", "nonce": "not hex"}
        r = http.post(lis.url + "/channels", json=hello, headers={"Authorization": "Bearer t0k"})
        assert (r.status_code, r.json()["code"]) == (400, "malformed")
        with ipcwire.connect(lis.url, token="t0k", timeout=10) as ch:  # the one place is free
            ch.send(b"in")
            assert lis.accept(timeout=10).recv(timeout=10) == b"in"
