"""Two clients resuming one stream id (a copied Last-Event-ID, a forked client, curl beside
a program): the newest connection takes the stream over, the displaced client is told so and
stops (``ChannelBroken``), and nobody takes the stream back. Before, each reconnect took the
stream from the other, for ever, at the server's ``retry:`` pace, and neither was told.

A client whose own connection half-died (the server still has it attached) must still get
its stream back by resuming: that is why the newest connection wins."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
from typing import Any

import pytest
from tests._loops import AioRun
from tests._proc import wait_until

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken
from ipcwire.sse import _events
from ipcwire.sse.aio import AioSseClientChannel, AioSseServerChannel
from ipcwire.sse.blocking import SseClientChannel, SseServerChannel

URL = "sse+http://127.0.0.1:0/events"
TAKEN = "took it over"


def generation(server: Any) -> int:
    """How many connections the stream has had (each attach counts one)."""
    return int(server._stream.generation)


def http_url(url: str) -> str:
    return "http" + url.removeprefix("sse+http")


def read_to_eof(sock: socket.socket) -> bytes:
    sock.settimeout(15)
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


def test_a_second_client_resuming_takes_the_stream_and_the_first_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    # retry=0.01: before, the two clients took the stream from each other every 10 ms
    with ipcwire.listen(URL, codec="json", retry=0.01) as listener:
        first = ipcwire.connect(listener.url, codec="json", timeout=5)
        server = listener.accept(timeout=5)
        assert isinstance(server, SseServerChannel)
        assert isinstance(first, SseClientChannel)
        with first, server:
            server.send(0)
            assert first.recv(timeout=5) == 0
            copied = first.last_event_id  # e.g. a client copied across a fork
            with ipcwire.connect(
                listener.url, codec="json", timeout=5, last_event_id=copied
            ) as second:
                assert generation(server) == 2
                server.send_many(list(range(1, 6)))
                assert [second.recv(timeout=5) for _ in range(5)] == [1, 2, 3, 4, 5]
                with pytest.raises(ChannelBroken, match=TAKEN) as info:
                    first.recv(timeout=5)
                assert "connect without last_event_id=" in str(info.value)
                assert listener.url in str(info.value)
                assert first.last_event_id == copied  # its position, not the taken mark
                with pytest.raises(ChannelBroken, match=TAKEN):
                    first.recv(timeout=1)  # and it stays broken: it never reconnects
                server.send_many(list(range(6, 11)))
                assert second.recv_many(5, timeout=5) == [6, 7, 8, 9, 10]
                assert second.statistics().dropped == 0
                assert generation(server) == 2  # one takeover, nothing taken back
                assert server.connected
    assert any("resumed it while one from" in r.getMessage() for r in caplog.records)


def test_asyncio_a_second_client_resuming_takes_the_stream_and_the_first_stops(
    aio_run: AioRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ipcwire.sse._server.TAKEOVER_GRACE", 0.2)

    async def main() -> None:
        listener = await aio.listen(URL, codec="json", retry=0.01)
        try:
            first = await aio.connect(listener.url, codec="json", timeout=5)
            server = await listener.accept(timeout=5)
            assert isinstance(server, AioSseServerChannel)
            assert isinstance(first, AioSseClientChannel)
            await server.send(0)
            assert await first.recv(timeout=5) == 0
            copied = first.last_event_id
            second = await aio.connect(listener.url, codec="json", timeout=5, last_event_id=copied)
            assert generation(server) == 2
            await server.send_many(list(range(1, 6)))
            assert [await second.recv(timeout=5) for _ in range(5)] == [1, 2, 3, 4, 5]
            with pytest.raises(ChannelBroken, match=TAKEN):
                await first.recv(timeout=5)
            assert first.last_event_id == copied
            with pytest.raises(ChannelBroken, match=TAKEN):
                await first.recv(timeout=1)
            await server.send_many(list(range(6, 11)))
            assert await second.recv_many(5, timeout=5) == [6, 7, 8, 9, 10]
            assert generation(server) == 2
            # the displaced connection closed long ago: its abort timer (TAKEOVER_GRACE)
            # finds it closed, and that is harmless (uvloop aborts the process otherwise)
            loop = asyncio.get_running_loop()
            later = loop.create_future()
            loop.call_later(0.4, later.set_result, None)
            await later
            await server.send(11)
            assert await second.recv(timeout=5) == 11
            await first.aclose()
            await second.aclose()
        finally:
            await listener.aclose()

    aio_run(asyncio.wait_for(main(), 60))


def test_two_clients_reading_at_once_do_not_take_the_stream_back_and_forth() -> None:
    """Both clients read while events flow: the displaced one stops at once; every event
    reaches the stream's reader once, in order, and the stream is attached twice in all."""
    with ipcwire.listen(URL, codec="json", retry=0.01) as listener:
        first = ipcwire.connect(listener.url, codec="json", timeout=5)
        server = listener.accept(timeout=5)
        assert isinstance(server, SseServerChannel)
        assert isinstance(first, SseClientChannel)
        with first, server:
            server.send(0)
            assert first.recv(timeout=5) == 0
            with ipcwire.connect(
                listener.url, codec="json", timeout=5, last_event_id=first.last_event_id
            ) as second:
                got: list[int] = []
                for n in range(1, 201):
                    server.send(n)
                    got.append(second.recv(timeout=5))
                    if n == 100:  # the first one reads meanwhile: it is told and stops
                        with pytest.raises(ChannelBroken, match=TAKEN):
                            while True:
                                first.recv(timeout=5)
                assert got == list(range(1, 201))
                assert generation(server) == 2


def test_a_client_whose_connection_half_died_gets_its_stream_back() -> None:
    """The server still has the old connection attached when the client resumes: the client
    gets its stream (no error, nothing lost); the old connection gets the taken event, with
    the marked id, and is closed."""
    with ipcwire.listen(URL, codec="json", retry=0.01) as listener:
        client = ipcwire.connect(listener.url, codec="json", timeout=5)
        server = listener.accept(timeout=5)
        assert isinstance(server, SseServerChannel)
        assert isinstance(client, SseClientChannel)
        with client, server:
            server.send_many([1, 2])
            assert client.recv_many(2, timeout=5) == [1, 2]
            # The client gives the connection up without the server knowing (what its
            # idle_timeout= does on a path that went silent): the server keeps it attached.
            old, client._sock = client._sock, None
            assert old is not None
            try:
                server.send_many([3, 4])
                assert client.recv_many(2, timeout=5) == [3, 4]  # resumed: it has the stream
                assert generation(server) == 2
                wire = read_to_eof(old).decode()  # the server closed the old connection
            finally:
                old.close()
            sid = server.stream_id
            ids = [line[4:] for line in wire.splitlines() if line.startswith("id: ")]
            # the taken event's id: the last event the old connection had, marked
            assert ids[-1] == ids[-2] + "~taken"
            assert ids[-2] in (f"{sid}-2", f"{sid}-4")  # (3 and 4 may have reached it)
            assert f"event: ipcwire-taken\nid: {ids[-1]}\n" in wire
            server.send(5)
            assert client.recv(timeout=5) == 5
            assert client.statistics().dropped == 0
            assert client.last_event_id == f"{sid}-5"


def test_asyncio_a_client_whose_connection_half_died_gets_its_stream_back(
    aio_run: AioRun,
) -> None:
    async def main() -> None:
        listener = await aio.listen(URL, codec="json", retry=0.01)
        try:
            client = await aio.connect(listener.url, codec="json", timeout=5)
            server = await listener.accept(timeout=5)
            assert isinstance(client, AioSseClientChannel)
            await server.send("a")
            assert await client.recv(timeout=5) == "a"
            old_reader, old_writer = client._reader, client._writer
            assert old_reader is not None and old_writer is not None
            client._reader = client._writer = None  # given up, the server not told
            await server.send("b")
            assert await client.recv(timeout=5) == "b"
            wire = b""
            while chunk := await asyncio.wait_for(old_reader.read(65536), 15):
                wire += chunk
            old_writer.close()
            assert b"event: ipcwire-taken\n" in wire
            await server.send("c")
            assert await client.recv(timeout=5) == "c"
            await client.aclose()
        finally:
            await listener.aclose()

    aio_run(asyncio.wait_for(main(), 60))


def test_curl_and_an_ipcwire_client_on_one_stream() -> None:
    with ipcwire.listen(URL, codec="json", retry=0.01) as listener:
        url = http_url(listener.url)
        client = ipcwire.connect(listener.url, codec="json", timeout=5)
        server = listener.accept(timeout=5)
        assert isinstance(server, SseServerChannel)
        sid = server.stream_id
        assert isinstance(client, SseClientChannel)
        with client, server:
            server.send("a")
            assert client.recv(timeout=5) == "a"
            # curl resumes the client's stream: it takes it over, the client stops
            curl = subprocess.Popen(
                ["curl", "-sS", "-N", "-H", f"Last-Event-ID: {client.last_event_id}", url],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert curl.stdout is not None
            with pytest.raises(ChannelBroken, match=TAKEN):
                client.recv(timeout=5)
            server.send("b")
            lines: list[str] = []
            while 'data: "b"' not in lines:
                lines.append(curl.stdout.readline().strip())
            # an ipcwire client resumes after curl's last event: curl is told, and ends
            with ipcwire.connect(
                listener.url, codec="json", timeout=5, last_event_id=f"{sid}-2"
            ) as again:
                rest = curl.stdout.read()
                assert curl.wait(10) == 0  # the server closed curl's response
                assert f"event: ipcwire-taken\nid: {sid}-2~taken\n" in rest
                server.send("c")
                assert again.recv(timeout=5) == "c"
                assert generation(server) == 3
            # whoever comes back with the taken id (EventSource would) is refused for good
            refused = subprocess.run(
                ["curl", "-sS", "-i", "-H", f"Last-Event-ID: {sid}-2~taken", url],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout  # fmt: skip
            assert refused.startswith("HTTP/1.1 409")
            assert '"code": "taken"' in refused
            with (
                ipcwire.connect(
                    listener.url, codec="json", timeout=5, last_event_id=f"{sid}-2~taken"
                ) as late,
                pytest.raises(ChannelBroken, match="HTTP 409"),
            ):
                late.recv(timeout=5)


def test_a_displaced_connection_that_does_not_read_is_aborted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A displaced client that stopped reading (its writer waits on a full socket, so it
    cannot be sent the taken event) is aborted after TAKEOVER_GRACE, not kept for ever."""
    monkeypatch.setattr("ipcwire.sse._server.TAKEOVER_GRACE", 0.5)
    with ipcwire.listen(URL, replay_bytes=256 * 1024) as listener:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = listener.url.split("//")[1].split("/")[0].split(":")
        stuck.connect((host, int(port)))
        stuck.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        with stuck, listener.accept(timeout=5) as server:
            assert isinstance(server, SseServerChannel)
            web = listener._server._web  # type: ignore[attr-defined]
            with pytest.raises(ipcwire.errors.Timeout):
                for _ in range(10_000):  # until the socket and the stream are full
                    server.send(b"x" * 65536, timeout=0.5)
            with ipcwire.connect(
                listener.url, timeout=5, allow_gaps=True, last_event_id=f"{server.stream_id}-0"
            ) as taker:
                assert generation(server) == 2
                assert wait_until(lambda: len(web.connections) == 1, timeout=10)
                server.send(b"after")
                while taker.recv(timeout=5) != b"after":
                    pass


def test_the_taken_event_after_events_in_one_read_at_every_split() -> None:
    """Bytes alone: events, then the taken event, split anywhere. Every event comes out (the
    fast path or the general parser), then ChannelBroken; the position stays unmarked."""
    from tests.sse.test_fast_path import SID, _core, _feed_split, _stream

    wire, payloads = _stream(5)
    wire += _events.event_bytes(_events.taken_id(SID, 5), b'{"reason": "r"}', "ipcwire-taken")
    for cut in range(len(wire) + 1):
        core = _core()
        assert _feed_split(core, wire, [cut]) == payloads
        assert isinstance(core.final, ChannelBroken), cut
        assert TAKEN in str(core.final)
        assert core.parser.last_id == f"{SID}-5"
