"""The server side of an SSE stream receives nothing, so its ``recv()`` waits for the stream
to end: ``EndOfChannel`` once its client closed it (ipcwire's client sends a DELETE),
``ChannelBroken`` once it vanished (its connection dropped and it did not come back within
``resume_window=``), ``Timeout`` after ``timeout=`` while the client is still there,
``ChannelClosed`` when this side is closed meanwhile. ``async for _ in stream`` and
``for _ in stream`` are the "wait until the client is gone" of a handler that only pushes
when something happens.

Before, ``recv()`` raised ``LocalProtocolError`` at once and nothing else told such a handler
its client had gone (``closed`` and ``connected`` are False during a short disconnect too):
under ``serve()`` it never ended, a task (asyncio) or a thread (blocking) per departed
client.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
import urllib.parse
from typing import Any

import pytest
from tests._loops import AioRun
from tests._threads import finished, in_thread

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.errors import ChannelBroken, ChannelClosed, EndOfChannel, Timeout
from ipcwire.sse.aio import AioSseServerChannel
from ipcwire.sse.blocking import SseServerChannel

URL = "sse+http://127.0.0.1:0/events"
CLIENTS = 50


def _vanish(url: str) -> None:
    """A client that reads the stream's head and goes without a word (a browser tab that
    closed: EventSource cannot say it is done)."""
    parts = urllib.parse.urlsplit(url.replace("sse+", ""))
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    conn.request("GET", parts.path, headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    assert response.status == 200
    conn.close()


def test_blocking_recv_waits_for_the_client_to_close() -> None:
    with ipcwire.listen(URL, codec="json") as listener:
        client = ipcwire.connect(listener.url, codec="json", timeout=5)
        server = listener.accept(timeout=5)
        assert isinstance(server, SseServerChannel)
        with pytest.raises(Timeout, match="still there"):
            server.recv(timeout=0.05)  # the client is there: nothing ends yet
        server.send("hi")
        assert client.recv(timeout=5) == "hi"
        t, got = in_thread(lambda: list(server))  # "until the client is gone"
        client.close()  # its DELETE ends the stream
        assert finished(t)
        assert got == [[]]
        with pytest.raises(EndOfChannel, match="its client closed it"):
            server.recv(timeout=0)
        with pytest.raises(ChannelBroken, match="its client closed it"):
            server.send("late")  # (as before)
        server.close()
        with pytest.raises(ChannelClosed):
            server.recv(timeout=0)


def test_blocking_recv_breaks_when_the_client_vanishes() -> None:
    with ipcwire.listen(URL, codec="json", resume_window=0) as listener:
        _vanish(listener.url)
        server = listener.accept(timeout=5)
        with pytest.raises(ChannelBroken, match=r"did not come back within 0\.0 s"):
            server.recv(timeout=10)


def test_blocking_close_wakes_a_waiting_recv() -> None:
    with ipcwire.listen(URL) as listener, ipcwire.connect(listener.url, timeout=5):
        server = listener.accept(timeout=5)
        t, got = in_thread(lambda: server.recv(timeout=30))
        server.close()
        assert finished(t)
        assert isinstance(got[0], ChannelClosed), got


def test_blocking_serve_handlers_end_with_their_clients() -> None:
    ended: list[BaseException | None] = []
    all_ended = threading.Event()
    lock = threading.Lock()

    def handler(stream: Channel) -> None:
        stream.send("hi")
        try:
            for _ in stream:  # until the client is gone
                pass
            result: BaseException | None = None
        except BaseException as exc:
            result = exc
        with lock:
            ended.append(result)
            if len(ended) == CLIENTS:
                all_ended.set()

    with ipcwire.listen(URL, codec="json") as listener:
        serving = threading.Thread(target=listener.serve, args=(handler,), daemon=True)
        serving.start()
        for _ in range(CLIENTS):
            with ipcwire.connect(listener.url, codec="json", timeout=5) as client:
                assert client.recv(timeout=5) == "hi"
        assert all_ended.wait(30), f"{len(ended)} of {CLIENTS} handlers ended"
        assert ended == [None] * CLIENTS
    assert finished(serving)


def test_asyncio_recv(aio_run: AioRun) -> None:
    async def main() -> None:
        async with await aio.listen(URL, codec="json") as listener:
            client = await aio.connect(listener.url, codec="json", timeout=5)
            server = await listener.accept(timeout=5)
            assert isinstance(server, AioSseServerChannel)
            with pytest.raises(Timeout, match="still there"):
                await server.recv(timeout=0.05)
            waiting = asyncio.ensure_future(server.recv())
            await client.aclose()
            with pytest.raises(EndOfChannel, match="its client closed it"):
                await asyncio.wait_for(waiting, 10)
            with pytest.raises(ChannelBroken):
                await server.send("late")

            await aio.connect(listener.url, codec="json", timeout=5)  # (the listener ends it)
            third = await listener.accept(timeout=5)
            waiting = asyncio.ensure_future(third.recv(timeout=30))
            await asyncio.sleep(0)  # (the recv is waiting now)
            await third.aclose()
            with pytest.raises(ChannelClosed):
                await waiting

        async with await aio.listen(URL, codec="json", resume_window=0) as listener:
            await asyncio.get_running_loop().run_in_executor(None, _vanish, listener.url)
            gone = await listener.accept(timeout=5)
            with pytest.raises(ChannelBroken, match="did not come back"):
                await gone.recv(timeout=10)

    aio_run(main())


def test_asyncio_serve_handlers_end_with_their_clients(aio_run: AioRun) -> None:
    async def main() -> None:
        ended: list[Any] = []
        all_ended = asyncio.Event()

        async def handler(stream: AioChannel) -> None:
            await stream.send("hi")
            try:
                await stream.recv()  # until the client is gone
            except BaseException as exc:
                ended.append(type(exc))
                if len(ended) == CLIENTS:
                    all_ended.set()
                raise

        async with await aio.listen(URL, codec="json") as listener:
            serving = asyncio.ensure_future(listener.serve(handler))
            for _ in range(CLIENTS):
                client = await aio.connect(listener.url, codec="json", timeout=5)
                assert await client.recv(timeout=5) == "hi"
                await client.aclose()
            await asyncio.wait_for(all_ended.wait(), 30)
            assert ended == [EndOfChannel] * CLIENTS
        await asyncio.wait_for(serving, 10)

    aio_run(main())


def test_closing_the_listener_ends_a_waiting_recv_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """ChannelClosed (you closed the listener), not a ChannelBroken that ``serve()`` would
    log as a client failing under its handler."""
    caplog.set_level("DEBUG", logger="ipcwire")
    listener = ipcwire.listen(URL)
    client = ipcwire.connect(listener.url, timeout=5)
    server = listener.accept(timeout=5)
    t, got = in_thread(lambda: server.recv(timeout=30))
    listener.close()
    assert finished(t)
    assert isinstance(got[0], ChannelClosed), got
    client.close()

    started = threading.Event()

    def handler(stream: Channel) -> None:
        started.set()
        for _ in stream:
            pass

    listener = ipcwire.listen(URL)
    client = ipcwire.connect(listener.url, timeout=5)
    serving = threading.Thread(target=listener.serve, args=(handler,), daemon=True)
    serving.start()
    assert started.wait(10)
    listener.close()  # (first: the client's close would end the stream cleanly)
    assert finished(serving)
    client.close()
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "handler" in r.message]
    assert not warnings, warnings[0].message
