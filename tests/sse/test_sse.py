"""Server-Sent Events with real clients: ipcwire's (blocking and asyncio), curl, and
misbehaving ones. Reconnection, replay, gaps, shutdown, refusals."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests._proc import wait_until
from tests._slowloris import slow_head
from tests.ws._tls import tls_contexts

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel, Listener
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    HandshakeError,
    LocalProtocolError,
    PermissionDenied,
    Timeout,
)
from ipcwire.sse.aio import AioSseClientChannel, AioSseServerChannel
from ipcwire.sse.blocking import SseClientChannel, SseServerChannel

URL = "sse+http://127.0.0.1:0/events"


@contextmanager
def stream(
    listener: Listener, **options: Any
) -> Iterator[tuple[SseServerChannel, SseClientChannel]]:
    client = ipcwire.connect(listener.url, timeout=10, **options)
    server = listener.accept(timeout=10)
    assert isinstance(server, SseServerChannel)
    assert isinstance(client, SseClientChannel)
    with client, server:
        yield server, client


def http_url(listener: Listener) -> str:
    return "http" + listener.url.removeprefix("sse+http")


def test_resume_after_the_server_drops_the_connection() -> None:
    with (
        ipcwire.listen(URL, codec="json", retry=0.01) as listener,
        stream(listener, codec="json") as (server, client),
    ):
        server.send_many([1, 2, 3])
        assert client.recv_many(timeout=5) == [1, 2, 3]
        assert client.retry == 0.01  # the server's retry: field is honoured
        server.drop_connection()
        server.send_many([4, 5])  # sent while the client is away
        got = [client.recv(timeout=5) for _ in range(2)]
        server.send(6)
        got.append(client.recv(timeout=5))
        assert got == [4, 5, 6]  # replayed once, in order, nothing lost or repeated
        assert client.last_event_id == f"{server.stream_id}-6"
        assert client.statistics().dropped == 0
        assert server.connected


def test_a_gap_is_never_silent() -> None:
    with ipcwire.listen(URL, retry=0.01, replay=3) as listener:
        with stream(listener) as (server, client):
            server.send(b"first")
            assert client.recv(timeout=5) == b"first"
            client._drop_socket()  # the network fails under the client
            server.send_many([b"%d" % i for i in range(10)])  # 7 of them fall out of the buffer
            with pytest.raises(ChannelBroken, match="could not replay 7 events"):
                client.recv(timeout=5)
            assert client.statistics().dropped == 7
            with pytest.raises(ChannelBroken):
                client.recv(timeout=1)  # and it stays broken
        with stream(listener, allow_gaps=True) as (server, client):
            server.send(b"first")
            assert client.recv(timeout=5) == b"first"
            client._drop_socket()
            server.send_many([b"%d" % i for i in range(10)])
            assert client.recv_many(timeout=5) == [b"7", b"8", b"9"]  # counted and going on
            assert client.statistics().dropped == 7


def test_resuming_a_stream_the_server_does_not_know() -> None:
    with ipcwire.listen(URL) as listener:
        with (
            pytest.raises(ChannelBroken, match="does not know the stream"),
            ipcwire.connect(listener.url, last_event_id="feedface-12", timeout=5) as ch,
        ):
            ch.recv(timeout=5)
        listener.accept(timeout=5).close()  # the new stream the server started for it
        with (
            ipcwire.connect(listener.url, last_event_id="feedface-12", allow_gaps=True) as ch,
            listener.accept(timeout=5) as fresh,
        ):
            fresh.send(b"new stream")
            assert ch.recv(timeout=5) == b"new stream"


def test_an_ended_stream_tells_reconnecting_clients_to_stop() -> None:
    with ipcwire.listen(URL) as listener:
        with stream(listener) as (server, client):
            server.send(b"last")
            server.close()
            assert client.recv(timeout=5) == b"last"
            with pytest.raises(EndOfChannel):
                client.recv(timeout=5)
            ended = client.last_event_id
        with (
            ipcwire.connect(listener.url, last_event_id=ended, timeout=5) as late,
            pytest.raises(EndOfChannel, match="204"),
        ):
            late.recv(timeout=5)


def test_one_way_and_limits() -> None:
    with (
        ipcwire.listen(URL) as listener,
        stream(listener, max_frame=100) as (server, client),  # the client's limit
    ):
        with pytest.raises(LocalProtocolError, match="cannot send"):
            client.send(b"up")
        with pytest.raises(Timeout, match="receives nothing"):  # (test_server_recv.py)
            server.recv(timeout=0)
        with pytest.raises(FrameTooLarge):
            server.send(b"x" * 101)
        server.send(b"x" * 100)
        assert client.recv(timeout=5) == b"x" * 100
        client.close()
        with pytest.raises(ChannelClosed):
            client.recv(timeout=0)
    with pytest.raises(ConfigurationError, match="unknown option"):
        ipcwire.listen(URL, colour="blue")
    for bad in (-1, float("nan"), float("inf")):  # "retry: -1000": ignored by every client
        with pytest.raises(ConfigurationError, match="retry="):
            ipcwire.listen(URL, retry=bad)
    with pytest.raises(ConfigurationError, match="keepalive="):
        ipcwire.listen(URL, keepalive=float("nan"))
    with pytest.raises(ConfigurationError, match="resume_window="):
        ipcwire.listen(URL, resume_window=float("nan"))
    for name in ("retry", "retry_for"):  # NaN: reconnect at once, and forever
        with pytest.raises(ConfigurationError, match="retry_for="):
            ipcwire.connect("sse+http://127.0.0.1:9/events", **{name: float("nan")})  # type: ignore[arg-type]


def test_refusals_are_typed_and_the_server_keeps_serving() -> None:
    with ipcwire.listen(URL, codec="json", token="t0k") as listener:
        with pytest.raises(AuthenticationFailed, match="wrong token"):
            ipcwire.connect(listener.url, codec="json", token="bad", timeout=5)
        with pytest.raises(AuthenticationFailed, match="requires a token"):
            ipcwire.connect(listener.url, codec="json", timeout=5)
        with pytest.raises(HandshakeError, match="the client uses codec='msgpack', the server "):
            ipcwire.connect(listener.url, codec="msgpack", token="t0k", timeout=5)
        with pytest.raises(PermissionDenied, match="origins="):
            ipcwire.connect(
                listener.url,
                codec="json",
                token="t0k",
                headers={"Origin": "http://evil.example"},
                timeout=5,
            )
        with pytest.raises(ConnectionRefused, match="404"):
            ipcwire.connect(listener.url + "/other", codec="json", token="t0k", timeout=5)
        with stream(listener, codec="json", token="t0k") as (server, client):
            server.send({"still": "serving"})
            assert client.recv(timeout=5) == {"still": "serving"}
    with (  # a server without the token cannot prove it knows it
        ipcwire.listen(URL) as listener,
        pytest.raises(AuthenticationFailed, match="prove"),
    ):
        ipcwire.connect(listener.url, token="t0k", timeout=5)


def test_a_slow_reader_slows_the_writer() -> None:
    with ipcwire.listen(URL, replay=4) as listener, stream(listener) as (server, client):
        chunk = b"z" * 65536
        with pytest.raises(Timeout, match="not reading"):
            for _ in range(5000):  # socket buffers fill, then four unwritten events
                server.send(chunk, timeout=0.5)
        assert server.statistics().dropped == 0
        assert client.recv(timeout=5) == chunk  # nothing was lost meanwhile


def test_a_client_that_never_comes_back() -> None:
    with ipcwire.listen(URL, resume_window=0) as listener, stream(listener) as (server, client):
        client.close()
        deadline = time.monotonic() + 10
        with pytest.raises(ChannelBroken, match="did not come back"):
            while time.monotonic() < deadline:  # until the server notices and expires it
                server.send(b"anyone?", timeout=5)


def test_shutdown_does_not_wait_for_open_streams() -> None:
    listener = ipcwire.listen(URL)
    clients = [ipcwire.connect(listener.url, timeout=5) for _ in range(3)]
    servers = [listener.accept(timeout=5) for _ in range(3)]
    servers[0].send(b"before shutdown")
    listener.close()  # returns although three streams are open and nobody closed them
    assert clients[0].recv(timeout=5) == b"before shutdown"
    for client in clients:
        with pytest.raises(EndOfChannel):
            client.recv(timeout=5)
        client.close()
    with pytest.raises(ChannelBroken):
        servers[1].send(b"after")
    with pytest.raises(ConnectionRefused):
        ipcwire.connect(listener.url, timeout=2)


def test_a_token_that_is_not_utf8_or_ascii_is_a_wrong_token() -> None:
    """401 for a Bearer value of raw bytes or non-ASCII text (it was 500: the comparison
    raised on what aiohttp decodes such a header to)."""
    with ipcwire.listen(URL, token="t") as listener:
        for header in (b"Authorization: Bearer \xff\xfe", "Authorization: Bearer é".encode()):
            out = subprocess.run(
                [b"curl", b"-sS", b"-o", b"/dev/null", b"-w", b"%{http_code}", b"-H", header,
                 http_url(listener).encode()],
                capture_output=True, timeout=10, check=True,
            )  # fmt: skip
            assert out.stdout == b"401"


def test_curl_reads_the_stream() -> None:
    with ipcwire.listen(URL, codec="json", token="t", keepalive=0.05) as listener:
        curl = subprocess.Popen(
            ["curl", "-sS", "-N", "-i", http_url(listener) + "?token=t"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert curl.stdout is not None
        with listener.accept(timeout=10) as server:
            assert isinstance(server, SseServerChannel)
            server.send({"n": 1})
            lines: list[str] = []
            while ": keepalive" not in lines:
                lines.append(curl.stdout.readline().strip())
            server.send({"n": 2})
            while "ipcwire-end" not in "".join(lines):
                if lines[-1].startswith('data: {"n":2}'):
                    server.close()
                lines.append(curl.stdout.readline().strip())
        assert curl.wait(10) == 0  # the server ended the response: curl is done
        head = [line.lower() for line in lines[: lines.index("")]]
        assert head[0].startswith("http/1.1 200")
        assert "content-type: text/event-stream; charset=utf-8" in head
        assert "cache-control: no-cache, no-transform" in head
        assert "x-accel-buffering: no" in head
        sid = server.stream_id
        assert f"id: {sid}-1" in lines
        assert 'data: {"n":1}' in lines
        assert "retry: 1000" in lines
        # curl resumes with Last-Event-ID: the stream ended, so 204 (EventSource stops too)
        done = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
             f"Last-Event-ID: {sid}-2", http_url(listener) + "?token=t"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        assert done.stdout == "204"
        # ... unless it missed events: then it gets them, and the end again
        rest = subprocess.run(
            ["curl", "-sS", "-H", f"Last-Event-ID: {sid}-1", http_url(listener) + "?token=t"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
        assert rest[rest.index(f"id: {sid}-2") + 1] == 'data: {"n":2}'
        assert "event: ipcwire-end" in rest


def test_curl_resumes_with_last_event_id() -> None:
    with (
        ipcwire.listen(URL, codec="json") as listener,
        stream(listener, codec="json") as (server, client),
    ):
        server.send_many(["a", "b", "c"])
        assert client.recv(timeout=5) == "a"
        resumed = subprocess.Popen(
            ["curl", "-sS", "-N", "-H", f"Last-Event-ID: {server.stream_id}-1",
             http_url(listener)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert resumed.stdout is not None
        seen: list[str] = []
        while 'data: "c"' not in seen:
            seen.append(resumed.stdout.readline().strip())
        resumed.terminate()
        resumed.wait(10)
        assert 'data: "a"' not in seen  # only what came after event 1
        assert seen.index('data: "b"') < seen.index('data: "c"')


def test_sse_over_tls(tmp_path: Path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    url = "sse+https://127.0.0.1:0/secure"
    with ipcwire.listen(url, ssl=server_ctx, codec="json") as listener:
        assert listener.url.startswith("sse+https://")
        with stream(listener, codec="json", ssl=client_ctx) as (server, client):
            server.send({"tls": True})
            assert client.recv(timeout=5) == {"tls": True}
        with pytest.raises(AuthenticationFailed, match="not trusted"):  # test_tls_refusal.py
            ipcwire.connect(listener.url, codec="json", timeout=5)


def test_asyncio_resume_and_shutdown() -> None:
    async def main() -> None:
        listener = await aio.listen(URL, codec="json", retry=0.01)
        client = await aio.connect(listener.url, codec="json", timeout=5)
        server = await listener.accept(timeout=5)
        assert isinstance(server, AioSseServerChannel)
        await server.send("one")
        assert await client.recv(timeout=5) == "one"
        server.drop_connection()
        await server.send("two")
        assert await client.recv(timeout=5) == "two"
        with pytest.raises(LocalProtocolError):
            await client.send("up")
        await listener.aclose()
        with pytest.raises(EndOfChannel):
            await client.recv(timeout=5)
        await client.aclose()
        with pytest.raises(ChannelBroken):
            await server.send("late")

    asyncio.run(asyncio.wait_for(main(), 30))


def test_channel_types() -> None:
    with ipcwire.listen(URL) as listener, stream(listener) as (server, client):
        assert isinstance(server, Channel)
        assert server.peer is not None
        assert client.peer is not None
        assert server.peer.address is not None


def test_big_batches_never_overrun_the_replay_buffer() -> None:
    with (
        ipcwire.listen(URL, replay=5, replay_bytes=4096) as listener,
        stream(listener) as (server, client),
    ):
        batch = [bytes([i]) * 1000 for i in range(40)]  # 40 KB through a 4 KB buffer
        server.send_many(batch, timeout=10)
        got: list[Any] = []
        while len(got) < 40:
            got.extend(client.recv_many(timeout=5))
        assert got == batch
        assert server.statistics().dropped == 0


@pytest.mark.parametrize("announced", [True, False])
def test_skipped_event_ids_are_a_gap_even_without_a_gap_event_on_an_ipcwire_stream(
    announced: bool,
) -> None:
    """A stream that jumps from event 1 to event 3 with no gap event: a gap when the server
    said the stream is ipcwire's (X-Ipcwire-Stream). Another server's ids are not checked:
    its ``order-5`` then ``order-3`` may be two records, and were taken for a repeat (the
    second dropped silently) or a jump (the channel broken)."""
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    if announced:
        head += b"X-Ipcwire-Stream: s\r\n"

    def serve() -> None:
        conn, _ = lsock.accept()
        conn.recv(65536)
        conn.sendall(
            head + b"\r\nid: s-1\ndata: b25l\n\nid: s-3\ndata: dGhyZWU=\n\nid: s-2\ndata: dHdv\n\n"
        )
        conn.recv(1)  # until the client goes
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    with ipcwire.connect(f"sse+http://127.0.0.1:{port}/", timeout=5) as ch:
        assert ch.recv(timeout=5) == b"one"
        if announced:
            with pytest.raises(ChannelBroken, match=r"1 events .* missing"):
                ch.recv(timeout=5)
            assert ch.statistics().dropped == 1
        else:
            assert [ch.recv(timeout=5), ch.recv(timeout=5)] == [b"three", b"two"]
            assert ch.statistics().dropped == 0
    t.join()
    lsock.close()


def test_a_connection_lost_before_its_first_bytes_resumes_the_same_stream() -> None:
    """The stream's id is in the response head: a client whose connection drops before it
    read the first event bytes (``id: <stream>-0``) still resumes its stream; it does not
    start a new one, leaving what the server sends on the old one to nobody."""
    with ipcwire.listen(URL, retry=0.01) as listener, stream(listener) as (server, client):
        assert client.last_event_id == f"{server.stream_id}-0"
        client._drop()  # the connection is lost, unread
        server.send(b"for the first stream")
        assert client.recv(timeout=5) == b"for the first stream"

    async def main() -> None:
        async with await aio.listen(URL, retry=0.01) as listener:
            client = await aio.connect(listener.url, timeout=5)
            server = await listener.accept(timeout=5)
            assert isinstance(server, AioSseServerChannel)
            assert isinstance(client, AioSseClientChannel)
            async with client, server:
                assert client.last_event_id == f"{server.stream_id}-0"
                client._drop()
                await server.send(b"for the first stream")
                assert await client.recv(timeout=5) == b"for the first stream"

    asyncio.run(main())


def test_a_client_that_lost_the_end_of_an_ended_stream_gets_it_on_resuming() -> None:
    """The server wrote the last events and the end event, but the connection was lost
    before the client read them: resuming replays them, then the end (not 204 at once,
    which lost them silently)."""
    with (
        ipcwire.listen(URL, codec="json", retry=0.01) as listener,
        stream(listener, codec="json") as (server, client),
    ):
        server.send_many([1, 2])
        server.close()
        assert wait_until(lambda: server._stream.end_written)
        client._drop()  # lost with all of it unread
        assert [client.recv(timeout=5), client.recv(timeout=5)] == [1, 2]
        with pytest.raises(EndOfChannel, match="closed the stream"):
            client.recv(timeout=5)


def test_hostile_resume_headers_start_a_new_stream() -> None:
    """A Last-Event-ID or X-Ipcwire-Max-Frame that is not a number (though ``isdigit()``
    says so) is an unknown stream, and no limit: a new stream, never a 500."""
    with ipcwire.listen(URL, codec="json") as listener:
        host, port = listener.url.split("//")[1].split("/")[0].rsplit(":", 1)
        for name, value in [
            ("Last-Event-ID", "feed-²"),
            ("X-Ipcwire-Max-Frame", "²"),
            ("X-Ipcwire-Max-Frame", "9" * 5000),  # over int()'s 4300 digits
        ]:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\n\r\n".encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    head += s.recv(4096)
                assert head.startswith(b"HTTP/1.1 200 "), head
            listener.accept(timeout=5).close()


def test_an_event_id_beyond_latin_1_is_sent_back_as_utf_8() -> None:
    """Event ids are any text (a server other than ipcwire's may send ``id: €1``); resuming
    sends Last-Event-ID in UTF-8, as EventSource does, instead of failing with a bare
    UnicodeEncodeError from connect() or recv()."""
    with (
        ipcwire.listen(URL) as listener,
        ipcwire.connect(listener.url, last_event_id="€-1", allow_gaps=True) as client,
        listener.accept(timeout=5) as server,
    ):
        server.send(b"fresh")
        assert client.recv(timeout=5) == b"fresh"  # after the gap: an unknown stream

    async def main() -> None:
        async with await aio.listen(URL) as listener:
            client = await aio.connect(listener.url, last_event_id="€-1", allow_gaps=True)
            async with client, await listener.accept(timeout=5) as server:
                await server.send(b"fresh")
                assert await client.recv(timeout=5) == b"fresh"

    asyncio.run(main())


def test_a_server_retry_longer_than_retry_for_still_gets_an_attempt() -> None:
    """A server advising ``retry:`` of an hour: a client with ``retry_for=0.2`` attempts to
    reconnect when retry_for runs out (it resumes here), instead of waiting the hour, and
    then giving up without a single attempt."""
    with (
        ipcwire.listen(URL, retry=3600) as listener,
        stream(listener, retry_for=0.2) as (server, client),
    ):
        server.send(b"one")
        assert client.recv(timeout=5) == b"one"
        assert client.retry == 3600
        server.drop_connection()
        server.send(b"two")
        assert client.recv(timeout=5) == b"two"

    async def main() -> None:
        async with await aio.listen(URL, retry=3600) as listener:
            client = await aio.connect(listener.url, retry_for=0.2)
            async with client, await listener.accept(timeout=5) as server:
                assert isinstance(server, AioSseServerChannel)
                await server.send(b"one")
                assert await client.recv(timeout=5) == b"one"
                server.drop_connection()
                await server.send(b"two")
                assert await client.recv(timeout=5) == b"two"

    asyncio.run(main())


def test_asyncio_sends_that_time_out_leave_nothing_behind() -> None:
    """A sender retrying with a timeout while its client does not read: each attempt that
    timed out left its future in the stream's waiters until the client read again (memory
    growing for as long as the client was stuck)."""

    async def main() -> None:
        async with await aio.listen(URL, replay=2) as listener:
            client = await aio.connect(listener.url, timeout=5)
            async with client, await listener.accept(timeout=5) as server:
                assert isinstance(server, AioSseServerChannel)
                chunk = b"z" * 65536
                with pytest.raises(Timeout):
                    for _ in range(5000):  # socket buffers fill, then the replay buffer
                        await server.send(chunk, timeout=0.2)
                for _ in range(5):
                    with pytest.raises(Timeout):
                        await server.send(chunk, timeout=0.01)
                assert server._stream.aio_waiters == []
                assert await client.recv(timeout=5) == chunk  # and it goes on

    asyncio.run(main())


def test_new_streams_wait_for_accept_up_to_backlog_then_get_503() -> None:
    """Streams nobody accepted are held for accept(): at most backlog= of them. A new client
    past that gets 503 with Retry-After (ConnectionRefused naming the backlog), so a client
    reconnecting in a loop cannot grow the server's memory; a client resuming its stream is
    never refused, and accepting makes room."""
    with ipcwire.listen(URL, backlog=2) as listener:
        first = ipcwire.connect(listener.url, timeout=5)
        second = ipcwire.connect(listener.url, timeout=5)
        with pytest.raises(ConnectionRefused, match="backlog=2"):
            ipcwire.connect(listener.url, timeout=5)
        status = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-D", "-", http_url(listener)],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        assert status.startswith("HTTP/1.1 503") and "retry-after: 1" in status.lower()
        assert isinstance(first, SseClientChannel)
        resumed = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", "-H",
             f"Last-Event-ID: {first.last_event_id}", http_url(listener)],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout  # fmt: skip
        assert resumed == "200"  # attached (curl gave up reading after 1 s)
        with pytest.raises(ChannelBroken, match="took it over"):
            first.recv(timeout=5)  # curl took its stream over (see test_takeover.py)
        again = ipcwire.connect(listener.url, timeout=5, last_event_id=first.last_event_id)
        with listener.accept(timeout=5) as served:
            served.send(b"one")
            third = ipcwire.connect(listener.url, timeout=5)  # room again
            assert again.recv(timeout=5) == b"one"
        for ch in (first, second, third, again):
            ch.close()


def test_a_client_cannot_raise_the_servers_event_size_limit() -> None:
    with (
        ipcwire.listen(URL, max_frame=1000) as listener,
        ipcwire.connect(listener.url, max_frame=1 << 20, timeout=5) as client,
        listener.accept(timeout=5) as served,
    ):
        with pytest.raises(FrameTooLarge):
            served.send(b"x" * 2000)
        served.send(b"x" * 1000)
        assert client.recv(timeout=5) == b"x" * 1000


def test_backlog_zero_still_lets_a_client_in() -> None:
    """backlog=0 is a legal listen() backlog (the kernel makes it its minimum). The SSE
    listener passed it to asyncio, which accepts at most backlog connections each time the
    socket is readable, so no client was ever answered; past that, it would have refused
    every new stream with 503 ('0 clients already wait for accept() (backlog=0)')."""
    with (
        ipcwire.listen(URL, backlog=0) as listener,
        ipcwire.connect(listener.url, timeout=5) as client,
        listener.accept(timeout=5) as served,
    ):
        served.send(b"in")
        assert client.recv(timeout=5) == b"in"


HALF_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Rest-Comes: "


def test_a_client_that_never_finishes_its_request_head_is_dropped() -> None:
    """The listener kept a connection that trickles its request head (slowloris) for 75 s, a
    descriptor each; now for handshake_timeout, as the http mechanism's, both drivers."""
    with ipcwire.listen(URL, handshake_timeout=0.3) as listener:
        assert slow_head(listener.url, HALF_HEAD) == b""
        with stream(listener) as (server, client):
            server.send(b"still served")
            assert client.recv(timeout=5) == b"still served"

    async def main() -> None:
        async with await aio.listen(URL, handshake_timeout=0.3) as alis:
            assert await asyncio.to_thread(slow_head, alis.url, HALF_HEAD) == b""

    asyncio.run(main())
