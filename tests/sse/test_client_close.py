"""ipcwire's SSE client closing tells the server it is done with its stream (an HTTP DELETE
naming the stream), and the server ends it at once.

Before, a client's ``close()`` looked to the server like a dropped connection: the server
kept the stream, its replay buffer and its server-side channel for ``resume_window`` (60 s),
and a handler sending in a loop kept sending into the buffer for that long after its client
left (a churn probe: every departed client's stream, handler and buffer held for a minute).
A connection that merely drops (no close()) still resumes as before; the DELETE is refused
as the GET is (token, Origin), and curl can send it too.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun
from tests.ws._tls import tls_contexts

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel, Listener
from ipcwire.errors import ChannelBroken, EndOfChannel
from ipcwire.sse.aio import AioSseClientChannel, AioSseServerChannel
from ipcwire.sse.blocking import SseClientChannel, SseListener, SseServerChannel

URL = "sse+http://127.0.0.1:0/events"
CLOSED = "its client closed it"  # what the server side's ChannelBroken says
UNKNOWN = "does not know the stream"  # a resume of a stream the server let go


def http_url(listener: Listener | Any) -> str:
    return "http" + str(listener.url).removeprefix("sse+http")


def last_id(client: Channel) -> str | None:
    assert isinstance(client, SseClientChannel)
    return client.last_event_id


def held(listener: Any) -> set[str]:
    """The ids of the streams the listener holds (its table: no public view of it)."""
    return set(listener._server.table.streams)


class Handlers:
    """A ``serve()`` handler that sends in a loop until its channel breaks, and what ended
    each one (blocking)."""

    def __init__(self) -> None:
        self.started: list[Channel] = []
        self.ended: list[BaseException] = []
        self.changed = threading.Condition()

    def __call__(self, ch: Channel) -> None:
        with self.changed:
            self.started.append(ch)
            self.changed.notify_all()
        i = 0
        try:
            while True:
                ch.send(i)
                i += 1
        except BaseException as exc:
            with self.changed:
                self.ended.append(exc)
                self.changed.notify_all()
            raise

    def wait(self, started: int, ended: int, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: len(self.started) >= started and len(self.ended) >= ended, timeout
            )


@contextmanager
def serving(**options: Any) -> Iterator[tuple[SseListener, Handlers]]:
    handlers = Handlers()
    listener = ipcwire.listen(URL, codec="json", **options)
    assert isinstance(listener, SseListener)
    thread = threading.Thread(target=listener.serve, args=(handlers,), daemon=True)
    thread.start()
    try:
        yield listener, handlers
    finally:
        listener.close()
        thread.join(10)
        assert not thread.is_alive()


def test_close_ends_the_servers_stream_and_its_sending_handler() -> None:
    with serving() as (listener, handlers):
        client = ipcwire.connect(listener.url, codec="json", timeout=10)
        assert isinstance(client, SseClientChannel)
        assert client.recv(timeout=10) == 0
        assert handlers.wait(1, 0)
        server = handlers.started[0]
        assert isinstance(server, SseServerChannel)
        sid = server.stream_id
        old_id = client.last_event_id
        assert old_id.startswith(sid)
        client.close()
        # before: the handler went on sending into the buffer for resume_window (60 s)
        assert handlers.wait(1, 1), "the handler still sends to a client that closed"
        err = handlers.ended[0]
        assert isinstance(err, ChannelBroken), repr(err)
        assert CLOSED in str(err) and sid in str(err) and listener.url in str(err)
        assert sid not in held(listener)
        # resuming the closed stream: the server does not know it any more
        with ipcwire.connect(listener.url, codec="json", timeout=10, last_event_id=old_id) as ch:
            with pytest.raises(ChannelBroken, match=UNKNOWN):
                ch.recv(timeout=10)
            assert isinstance(ch, SseClientChannel)
            assert ch._core.stream_id != sid  # a new stream (a new accept() on the server)
        assert handlers.wait(2, 2)  # that new stream's handler ended with its client too


def test_a_churn_of_clients_leaves_no_streams_or_handlers() -> None:
    rounds = 30
    with serving() as (listener, handlers):
        for _ in range(rounds):
            with ipcwire.connect(listener.url, codec="json", timeout=10) as client:
                assert client.recv(timeout=10) == 0
        assert handlers.wait(rounds, rounds)
        assert all(isinstance(e, ChannelBroken) for e in handlers.ended)
        assert held(listener) == set()


def test_asyncio_aclose_ends_the_servers_stream_and_its_sending_handler(
    aio_run: AioRun,
) -> None:
    async def main() -> None:
        ended: list[BaseException] = []
        started: list[AioChannel] = []
        changed = asyncio.Condition()

        async def handler(ch: AioChannel) -> None:
            async with changed:
                started.append(ch)
                changed.notify_all()
            i = 0
            try:
                while True:
                    await ch.send(i)
                    i += 1
            except BaseException as exc:
                async with changed:
                    ended.append(exc)
                    changed.notify_all()
                raise

        async def until(n_started: int, n_ended: int) -> None:
            async with asyncio.timeout(10), changed:
                await changed.wait_for(lambda: len(started) >= n_started and len(ended) >= n_ended)

        async with await aio.listen(URL, codec="json") as listener:
            serve = asyncio.ensure_future(listener.serve(handler))
            client = await aio.connect(listener.url, codec="json", timeout=10)
            assert isinstance(client, AioSseClientChannel)
            assert await client.recv(timeout=10) == 0
            await until(1, 0)
            server = started[0]
            assert isinstance(server, AioSseServerChannel)
            sid = server.stream_id
            old_id = client.last_event_id
            await client.aclose()
            await until(1, 1)  # before: TimeoutError, the handler sent on for 60 s
            assert isinstance(ended[0], ChannelBroken), repr(ended[0])
            assert CLOSED in str(ended[0]) and sid in str(ended[0])
            assert sid not in held(listener)
            again = await aio.connect(listener.url, codec="json", timeout=10, last_event_id=old_id)
            with pytest.raises(ChannelBroken, match=UNKNOWN):
                await again.recv(timeout=10)
            # close() (not aclose()) starts the DELETE in a task of the loop
            again.close()
            await until(2, 2)
            assert held(listener) == set()
            listener.close()
            await serve

    aio_run(main())


def test_a_dropped_connection_still_resumes_and_a_close_after_it_ends_the_stream() -> None:
    with (
        ipcwire.listen(URL, codec="json", retry=0.01) as listener,
        ipcwire.connect(listener.url, codec="json", timeout=10) as client,
        listener.accept(timeout=10) as server,
    ):
        assert isinstance(server, SseServerChannel)
        server.send(1)
        assert client.recv(timeout=10) == 1
        server.drop_connection()  # not a close(): the stream stays for the client's return
        server.send_many([2, 3])
        assert [client.recv(timeout=10) for _ in range(2)] == [2, 3]
        assert server.stream_id in held(listener)
        assert client.statistics().dropped == 0
        client.close()
        with pytest.raises(ChannelBroken, match=CLOSED):
            server.send(4)
        assert held(listener) == set()


def test_delete_only_for_a_stream_that_is_the_clients_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ipcwire")
    with ipcwire.listen(URL, codec="json", retry=0.01) as listener:
        # the server ended the stream and the client read the end: the server kept the
        # ended stream and its replay buffer for resume_window, for a client that lost its
        # end; this one has everything, and its close() lets the server drop the buffer
        # (the stream stays, empty, so that a late resume of it still hears 204)
        with ipcwire.connect(listener.url, codec="json", timeout=10) as client:
            with listener.accept(timeout=10) as server:
                server.send(1)
            assert client.recv(timeout=10) == 1
            with pytest.raises(EndOfChannel):
                client.recv(timeout=10)
            (ended,) = listener._server.table.streams.values()  # type: ignore[attr-defined]
            assert ended._log or ended._datas
        assert not (ended._log or ended._datas), "the ended stream kept its buffer"
        with (
            ipcwire.connect(
                listener.url, codec="json", last_event_id=last_id(client), timeout=5
            ) as late,
            pytest.raises(EndOfChannel, match="204"),
        ):
            late.recv(timeout=5)
        # another client took the stream over: the displaced one must not end it
        first = ipcwire.connect(listener.url, codec="json", timeout=10)
        server = listener.accept(timeout=10)
        assert isinstance(first, SseClientChannel)
        server.send(1)
        assert first.recv(timeout=10) == 1
        with ipcwire.connect(
            listener.url, codec="json", timeout=10, last_event_id=first.last_event_id
        ) as second:
            with pytest.raises(ChannelBroken, match="took it over"):
                first.recv(timeout=10)
            first.close()
            server.send(2)  # the stream is second's, and still there
            assert second.recv(timeout=10) == 2
        with pytest.raises(ChannelBroken, match=CLOSED):
            server.send(3)  # second's close() ended it
        server.close()
    released = [m for r in caplog.records if "released by its client" in (m := r.getMessage())]
    assert len(released) == 2, released  # the ended one's, and second's: not first's


def _curl_delete(listener: Any, *headers: str) -> str:
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(
        [*args, http_url(listener)], capture_output=True, text=True, timeout=20, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_curl_deletes_a_stream_with_the_token_and_nothing_else_does() -> None:
    with (
        ipcwire.listen(URL, codec="json", token="s3cret", retry=0.01) as listener,
        ipcwire.connect(listener.url, codec="json", token="s3cret", timeout=10) as client,
        listener.accept(timeout=10) as server,
    ):
        assert isinstance(server, SseServerChannel)
        server.send(1)
        assert client.recv(timeout=10) == 1
        sid = server.stream_id
        name = f"X-Ipcwire-Stream: {sid}"
        # refused as a GET would be: no token, a wrong token, a page of another site
        assert _curl_delete(listener, name) == "401"
        assert _curl_delete(listener, name, "Authorization: Bearer wrong") == "401"
        assert (
            _curl_delete(
                listener, name, "Authorization: Bearer s3cret", "Origin: https://evil.example"
            )
            == "403"
        )
        # a taken event's id (a displaced connection's) may not end the new reader's stream
        assert _curl_delete(listener, f"{name}-1~taken", "Authorization: Bearer s3cret") == "409"
        assert _curl_delete(listener, "Authorization: Bearer s3cret") == "400"  # no stream
        assert sid in held(listener)
        server.send(2)  # the stream stays, its client reads on
        assert client.recv(timeout=10) == 2
        # with the token, by one of its event ids (what a page knows: lastEventId)
        assert _curl_delete(listener, f"{name}-2", "Authorization: Bearer s3cret") == "204"
        assert sid not in held(listener)
        with pytest.raises(ChannelBroken, match=CLOSED):
            server.send(3)
        # the client's connection was closed: it resumes and learns the stream is gone
        with pytest.raises(ChannelBroken, match=UNKNOWN):
            client.recv(timeout=10)
        assert _curl_delete(listener, name, "Authorization: Bearer s3cret") == "404"
        listener.accept(timeout=10).close()  # the new stream the client's resume started


def test_close_ends_the_stream_over_tls_too(tmp_path: Path, aio_run: AioRun) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    url = "sse+https://127.0.0.1:0/secure"
    with ipcwire.listen(url, ssl=server_ctx, codec="json") as listener:
        client = ipcwire.connect(listener.url, codec="json", ssl=client_ctx, timeout=10)
        with listener.accept(timeout=10) as server:
            server.send(1)
            assert client.recv(timeout=10) == 1
            client.close()
            with pytest.raises(ChannelBroken, match=CLOSED):
                server.send(2)

    async def main() -> None:
        async with await aio.listen(url, ssl=server_ctx, codec="json") as listener:
            client = await aio.connect(listener.url, codec="json", ssl=client_ctx, timeout=10)
            async with await listener.accept(timeout=10) as server:
                await server.send(1)
                assert await client.recv(timeout=10) == 1
                await client.aclose()
                with pytest.raises(ChannelBroken, match=CLOSED):
                    await server.send(2)

    aio_run(main())
