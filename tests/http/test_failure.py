"""A failed peer is told from a clean close over HTTP (``Capabilities.tells_failure``).

Before, a server channel whose ``with`` block or ``serve()`` handler raised ended exactly like
``close()``: its client's ``recv()`` raised ``EndOfChannel``; and a client whose ``with``
block raised sent the same DELETE as ``close()``. Now a failed server channel answers 500
``failed`` where a closed one answers 410 ``gone`` and ends the message stream with a failure
mark (cut short for a client that did not say it knows the mark), and a failed client's
DELETE carries ``Ipcwire-Failed`` (a server that did not say it reads it gets its message
stream cut instead). Only the exception's type crosses, never its text.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from aiohttp import web
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel
from ipcwire.errors import ChannelBroken, EndOfChannel, IpcwireError
from ipcwire.http._frames import StreamReader, failure_frame
from ipcwire.http._protocol import FAILED_HEADER

SECRET = "do-not-leak-this"
KB = 1024


class Boom(Exception):
    pass


def _handler(fail: bool) -> Any:
    def handler(ch: Channel) -> None:
        ch.send({"echo": ch.recv(timeout=10)})
        if fail:
            raise Boom(SECRET)

    return handler


@pytest.fixture
def serving() -> Iterator[Any]:
    """``serving(fail)``: a blocking JSON listener whose serve() handler answers one message,
    then raises (``fail``) or returns; its URL."""
    started: list[tuple[ipcwire.Listener, threading.Thread]] = []

    def start(fail: bool) -> str:
        lis = ipcwire.listen("http://127.0.0.1:0/api", codec="json")
        t = threading.Thread(target=lis.serve, args=(_handler(fail),), daemon=True)
        t.start()
        started.append((lis, t))
        return lis.url

    yield start
    for lis, t in started:
        lis.close()
        t.join(10)


def _end(ch: ipcwire.Channel, timeout: float | None) -> IpcwireError:
    with pytest.raises(IpcwireError) as info:
        ch.recv(timeout=timeout)
    return info.value


def _told_failure(exc: BaseException) -> None:
    assert isinstance(exc, ChannelBroken), repr(exc)
    assert "ended the channel after an error on its side" in str(exc)
    assert "Boom raised while the channel was open" in str(exc)
    assert SECRET not in str(exc)


@pytest.mark.parametrize("how", ["send+recv", "recv(timeout)", "request"])
def test_a_serve_handler_that_raises_is_channel_broken_at_the_client(
    serving: Any, how: str
) -> None:
    url = serving(True)
    with ipcwire.connect(url, codec="json", timeout=10) as ch:
        if how == "request":
            assert ch.request("hi", timeout=10) == {"echo": "hi"}
        else:
            ch.send("hi")
            assert ch.recv(timeout=None if how == "send+recv" else 10) == {"echo": "hi"}
        if how == "request":
            # the next request finds the channel ended: 500 failed, not 410 gone
            with pytest.raises(IpcwireError) as info:
                ch.request("again", timeout=10)
            _told_failure(info.value)
        else:
            _told_failure(_end(ch, None if how == "send+recv" else 10))
        with pytest.raises(ChannelBroken):
            ch.send("more")


@pytest.mark.parametrize("timeout", [None, 10.0])
def test_a_serve_handler_that_returns_is_still_a_clean_end(
    serving: Any, timeout: float | None
) -> None:
    url = serving(False)
    with ipcwire.connect(url, codec="json", timeout=10) as ch:
        ch.send("hi")
        assert ch.recv(timeout=timeout) == {"echo": "hi"}
        assert isinstance(_end(ch, timeout), EndOfChannel)


def test_asyncio_listener_serve_handler_that_raises(aio_run: AioRun) -> None:
    async def handler(ch: aio.AioChannel) -> None:
        await ch.send({"echo": await ch.recv(timeout=10)})
        if await ch.recv(timeout=10) == "fail":
            raise Boom(SECRET)

    async def main() -> None:
        lis = await aio.listen("http://127.0.0.1:0/api", codec="json")
        task = asyncio.get_running_loop().create_task(lis.serve(handler))
        try:
            for word in ("fail", "fine"):
                async with await aio.connect(lis.url, codec="json", timeout=10) as ch:
                    assert await ch.request("hi", timeout=10) == {"echo": "hi"}
                    await ch.send(word)
                    with pytest.raises(IpcwireError) as info:
                        await ch.recv(timeout=10)
                    if word == "fail":
                        _told_failure(info.value)
                    else:
                        assert isinstance(info.value, EndOfChannel), repr(info.value)
        finally:
            await lis.aclose()
            await asyncio.wait_for(task, 10)

    aio_run(main())


def test_messages_the_client_has_not_fetched_come_first_then_the_failure() -> None:
    """The failure is the channel's state, not a message that must fit behind the others:
    close() returns at once, the client fetches ~3 MiB first, then gets ChannelBroken."""
    with (
        ipcwire.listen("http://127.0.0.1:0/api") as lis,
        ipcwire.connect(lis.url, timeout=10) as client,
    ):
        server = lis.accept(timeout=10)
        sent = [bytes([i % 251]) * (64 * KB) for i in range(48)]
        with pytest.raises(Boom), server:
            for m in sent:
                server.send(m, timeout=10)
            raise Boom(SECRET)
        got = [client.recv(timeout=10) for _ in sent]
        assert got == sent
        _told_failure(_end(client, 10))


def _read_all(ch: ipcwire.Channel) -> tuple[list[bytes], BaseException]:
    got: list[bytes] = []
    while True:
        try:
            got.append(ch.recv(timeout=20))
        except IpcwireError as exc:
            return got, exc


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_failed_client_whose_messages_wait_for_room_is_told_after_all_of_them(
    api: str,
) -> None:
    """The server's application takes nothing while the client sends 6 MB (it holds 4 MiB):
    close() waits for room as it does after a clean block, the server reads every message,
    then ChannelBroken naming the type."""
    sent = [bytes([i]) * 1_000_000 for i in range(6)]
    with ipcwire.listen("http://127.0.0.1:0/api") as lis:
        box: list[BaseException] = []

        def blocking_client() -> None:
            try:
                with ipcwire.connect(lis.url, timeout=10) as ch:
                    for m in sent:
                        ch.send(m, timeout=20)
                    raise Boom(SECRET)
            except BaseException as exc:
                box.append(exc)

        async def aio_client() -> None:
            async with await aio.connect(lis.url, timeout=10) as ch:
                for m in sent:
                    await ch.send(m, timeout=20)
                raise Boom(SECRET)

        def asyncio_client() -> None:
            try:
                asyncio.run(aio_client())
            except BaseException as exc:
                box.append(exc)

        t = threading.Thread(target=blocking_client if api == "blocking" else asyncio_client)
        t.start()
        server = lis.accept(timeout=10)
        got, end = _read_all(server)
        t.join(30)
        assert not t.is_alive()
        assert len(box) == 1 and isinstance(box[0], Boom)
        assert got == sent
        _told_failure(end)
        assert "the client of" in str(end)


# -- a peer of the previous version ----------------------------------------------------------
def _open_old(http: httpx.Client) -> str:
    """Open a channel as an ipcwire client of the previous version does (its hello does not
    say "tells_failure")."""
    resp = http.post("/channels", json={"ipcwire": 1, "codec": "bytes"})
    assert resp.status_code == 201
    info = msgspec.json.decode(resp.content)
    assert info["tells_failure"] is True
    return str(info["channel"])


def test_an_older_client_gets_an_error_not_a_clean_end() -> None:
    """A client that did not say it knows the failure mark (an older ipcwire, curl): its
    long poll is answered 500 (an older ipcwire raises ChannelBroken for it), its message
    stream is cut short (ChannelBroken too), never the 410 or clean end of a close."""
    with (
        ipcwire.listen("http://127.0.0.1:0/api") as lis,
        httpx.Client(base_url=lis.url, timeout=10) as http,
    ):
        sid = _open_old(http)
        server = lis.accept(timeout=10)
        with pytest.raises(Boom), server:
            server.send(b"before")
            raise Boom(SECRET)
        resp = http.get(f"/channels/{sid}/messages")
        assert resp.status_code == 200 and resp.content == b"\0\0\0\x06before"
        resp = http.get(f"/channels/{sid}/messages")
        assert resp.status_code == 500
        doc = msgspec.json.decode(resp.content)
        assert doc["code"] == "failed"
        assert doc["reason"] == "Boom raised while the channel was open"
        assert SECRET not in resp.text
        with (
            pytest.raises(httpx.RemoteProtocolError),
            http.stream("GET", f"/channels/{sid}/stream") as stream,
        ):
            assert stream.status_code == 200
            stream.read()


def test_a_clean_close_looks_as_before_on_the_wire() -> None:
    """410 gone and a stream that simply ends, for an older client and a new one alike."""
    with (
        ipcwire.listen("http://127.0.0.1:0/api") as lis,
        httpx.Client(base_url=lis.url, timeout=10) as http,
    ):
        sid = _open_old(http)
        with lis.accept(timeout=10):
            pass
        assert http.get(f"/channels/{sid}/messages").status_code == 410
        with http.stream("GET", f"/channels/{sid}/stream") as stream:
            assert stream.read() == b""
        assert http.delete(f"/channels/{sid}").status_code == 204


class _OldServer:
    """The HTTP endpoints of an ipcwire server of the previous version, enough for a client
    to open, send, stream and close: its open answer does not say "tells_failure"; it records
    DELETEs and message streams that were cut."""

    def __init__(self) -> None:
        self.deletes: list[dict[str, str]] = []
        self.cut = asyncio.Event()
        self.received: list[bytes] = []

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.path, request.method
        if path == "/old/channels" and method == "POST":
            body = {"ipcwire": 1, "channel": "c1", "max_frame": 1 << 20, "max_batch": 1 << 22}
            return web.Response(status=201, body=msgspec.json.encode(body))
        if path == "/old/channels/c1/messages" and method == "POST":
            self.received.append(await request.read())
            return web.Response(status=204)
        if path == "/old/channels/c1/stream":
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ipcwire-frames"})
            await resp.prepare(request)
            try:
                await asyncio.Event().wait()  # until the client drops it
            except asyncio.CancelledError:
                self.cut.set()
                raise
        if path == "/old/channels/c1" and method == "DELETE":
            self.deletes.append(dict(request.headers))
            return web.Response(status=204)
        return web.Response(status=404)


@pytest.mark.parametrize("stream_open", [False, True])
def test_a_failed_client_cuts_its_stream_to_an_older_server(
    aio_run: AioRun, stream_open: bool
) -> None:
    """An older server ignores Ipcwire-Failed (its channel would end cleanly): the client
    does not DELETE, it cuts the message stream (its own, or one opened for it), which that
    server ends with ChannelBroken ("the client went away"). A clean close still DELETEs."""

    async def main() -> None:
        old = _OldServer()
        server = web.Server(old.handle, handler_cancellation=True, access_log=None)
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(server, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/old"
        try:
            with pytest.raises(Boom):
                async with await aio.connect(url, timeout=10) as ch:
                    if stream_open:
                        with pytest.raises(ipcwire.Timeout):
                            await ch.recv(timeout=0.05)
                    await ch.send(b"before")
                    raise Boom(SECRET)
            await asyncio.wait_for(old.cut.wait(), 10)
            assert old.deletes == []
            assert old.received == [b"before"]
            async with await aio.connect(url, timeout=10) as ch:
                await ch.send(b"clean")
            assert len(old.deletes) == 1 and FAILED_HEADER not in old.deletes[0]
        finally:
            srv.close()
            await server.shutdown(1)

    aio_run(main())


def test_the_stream_reader_takes_the_failure_mark_split_anywhere() -> None:
    body = b"\0\0\0\x02hi" + b"\xff\xff\xff\xff" + failure_frame("Boom raised" + "\x07é" * 600)
    for cut in range(len(body) + 1):
        r = StreamReader(1000, "peer")
        got = r.feed(body[:cut]) + r.feed(body[cut:]) + r.feed(b"\0\0\0\x01x")
        assert got == [b"hi"]
        assert r.failed is not None and len(r.failed) <= 1024
        assert r.partial == 0


def test_an_oversized_failure_reason_is_a_protocol_error() -> None:
    r = StreamReader(1000, "peer")
    with pytest.raises(ipcwire.RemoteProtocolError):
        r.feed(b"\xff\xff\xff\xfe\0\0\x04\x01" + b"x" * 1025)


def test_the_openapi_description_names_the_failure_header() -> None:
    with ipcwire.listen("http://127.0.0.1:0/api") as lis:
        doc = msgspec.json.decode(httpx.get(lis.url + "/openapi.json", timeout=10).content)
    delete = doc["paths"]["/api/channels/{id}"]["delete"]
    assert FAILED_HEADER in [p["name"] for p in delete["parameters"]]
    assert (
        "failed"
        in doc["paths"]["/api/channels/{id}/messages"]["get"]["responses"]["500"]["description"]
    )


def test_a_hostile_failure_reason_is_bounded_and_shown_harmlessly() -> None:
    """The reason comes from the peer: control characters are not passed on, and at most
    1024 bytes of it are shown."""
    with (
        ipcwire.listen("http://127.0.0.1:0/api") as lis,
        httpx.Client(base_url=lis.url, timeout=10) as http,
    ):
        sid = _open_old(http)
        server = lis.accept(timeout=10)
        hostile = "%1B[31mred%00" + "x" * 3000
        assert http.delete(f"/channels/{sid}", headers={FAILED_HEADER: hostile}).status_code == 204
        end = _end(server, 10)
        assert isinstance(end, ChannelBroken)
        text = str(end)
        assert "\x1b" not in text and "\0" not in text and "?[31mred?" in text
        assert text.count("x") < 1024


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_a_hello_whose_version_only_equals_one_in_python_is_refused(version: object) -> None:
    """JSON's true and 1.0 compare equal to 1 in Python: the server opened a channel for
    them. Only the integer 1 is this protocol's version: anything else that is not an integer
    is a malformed open request (400 naming the member), not another version (409)."""
    with (
        ipcwire.listen("http://127.0.0.1:0/api") as lis,
        httpx.Client(base_url=lis.url, timeout=10) as http,
    ):
        resp = http.post("/channels", json={"ipcwire": version, "codec": "bytes"})
        assert resp.status_code == 400
        assert resp.json()["code"] == "malformed"
        assert '"ipcwire"' in resp.json()["detail"] and "the integer 1" in resp.json()["detail"]
        assert http.post("/channels", json={"ipcwire": 1, "codec": "bytes"}).status_code == 201
