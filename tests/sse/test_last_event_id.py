"""``ch.last_event_id`` is the id of the last message recv()/recv_many() returned, not how
far the client has read the wire: a program that saves it and, after a crash, resumes from
it gets every message it had not taken yet. It ran ahead before (the parser's position):
a read that brought five events made it the fifth's while the program had the first, and
resuming from it lost the four others, with no gap and no error. The internal reconnection
of a live client still resumes from what it has read (its queue holds the rest)."""

from __future__ import annotations

from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.sse.aio import AioSseClientChannel, AioSseServerChannel
from ipcwire.sse.blocking import SseClientChannel, SseServerChannel

URL = "sse+http://127.0.0.1:0/events"


def test_blocking_last_event_id_is_what_recv_returned() -> None:
    with ipcwire.listen(URL, codec="json") as listener:
        client = ipcwire.connect(listener.url, codec="json", timeout=5)  # it will "crash"
        server = listener.accept(timeout=5)
        assert isinstance(client, SseClientChannel)
        assert isinstance(server, SseServerChannel)
        sid = server.stream_id
        assert client.last_event_id == f"{sid}-0"  # nothing taken yet: still its stream
        server.send_many([1, 2, 3, 4, 5])  # one write: one read parses all five
        assert client.recv(timeout=5) == 1
        assert client.last_event_id == f"{sid}-1"
        assert client.recv_many(2, timeout=5) == [2, 3]
        assert client.last_event_id == f"{sid}-3"
        assert client.recv(timeout=5) == 4
        assert client.recv(timeout=5) == 5
        assert client.last_event_id == f"{sid}-5"
        server.send_many([6, 7, 8])  # (the parser's fast path, a whole run at a time)
        assert client.recv(timeout=5) == 6
        assert client.last_event_id == f"{sid}-6"
        saved = client.last_event_id
        # The program "crashes" here, holding 7 and 8 unread; its successor resumes.
        with ipcwire.connect(listener.url, codec="json", last_event_id=saved, timeout=5) as c2:
            server.send(9)
            assert [c2.recv(timeout=5) for _ in range(3)] == [7, 8, 9]
            assert isinstance(c2, SseClientChannel)
            assert c2.last_event_id == f"{sid}-9"
        client.close()


def test_asyncio_last_event_id_is_what_recv_returned(aio_run: AioRun) -> None:
    async def main() -> None:
        async with await aio.listen(URL, codec="json") as listener:
            client = await aio.connect(listener.url, codec="json", timeout=5)
            server = await listener.accept(timeout=5)
            assert isinstance(client, AioSseClientChannel)
            assert isinstance(server, AioSseServerChannel)
            sid = server.stream_id
            assert client.last_event_id == f"{sid}-0"
            await server.send_many([1, 2, 3, 4, 5])
            assert await client.recv(timeout=5) == 1
            assert client.last_event_id == f"{sid}-1"
            assert await client.recv_many(2, timeout=5) == [2, 3]
            assert client.last_event_id == f"{sid}-3"
            await server.send_many([4.5])
            assert [await client.recv(timeout=5) for _ in range(3)] == [4, 5, 4.5]
            assert client.last_event_id == f"{sid}-6"
            await server.send_many([7, 8, 9])
            assert await client.recv(timeout=5) == 7
            saved = client.last_event_id
            assert saved == f"{sid}-7"
            async with await aio.connect(
                listener.url, codec="json", last_event_id=saved, timeout=5
            ) as c2:
                await server.send(10)
                assert [await c2.recv(timeout=5) for _ in range(3)] == [8, 9, 10]
            await client.aclose()

    aio_run(main())


def test_a_live_client_reconnects_from_what_it_has_read() -> None:
    """A dropped connection resumes after the last event read, not the last returned: the
    events in between are in the client's queue already, and come once each."""
    with (
        ipcwire.listen(URL, codec="json", retry=0) as listener,
        ipcwire.connect(listener.url, codec="json", timeout=5, retry=0) as client,
    ):
        server = listener.accept(timeout=5)
        assert isinstance(client, SseClientChannel)
        assert isinstance(server, SseServerChannel)
        server.send_many([1, 2, 3])
        assert client.recv(timeout=5) == 1
        server.drop_connection()
        server.send(4)
        assert [client.recv(timeout=5) for _ in range(3)] == [2, 3, 4]
        assert client.last_event_id == f"{server.stream_id}-4"
        assert client.statistics().dropped == 0
