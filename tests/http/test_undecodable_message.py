"""A channel message the http server cannot decode is delivered as RemoteProtocolError in
its place, and the messages around it are delivered (in one POST or several), as on every
other mechanism. Before, the server answered the whole POST 400: the good messages sent with
it were lost though their send() had returned, and the client's channel broke for good
(helper-121)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from tests._codecs import JsonAsIs

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel
from ipcwire.errors import RemoteProtocolError


def _send_all(client: Channel) -> None:
    client.send(b'{"n": 1}')
    client.send(b"\xff{")  # not JSON
    client.send(b'{"n": 2}')
    client.send_many([b'{"n": 3}', b"[1,", b'{"n": 4}'])  # one batch, a bad one inside


def test_blocking_server_delivers_the_error_in_place() -> None:
    with ipcwire.listen("http://127.0.0.1:0/api", codec="json") as lst:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        client = ipcwire.connect(lst.url, codec=JsonAsIs(), timeout=10)
        t.join(10)
        server = box[0]
        _send_all(client)
        got: list[Any] = []
        while len(got) < 6:
            try:
                got.extend(server.recv_many(timeout=10))
            except RemoteProtocolError as exc:
                assert exc.endpoint == lst.url and "skipped" in str(exc)
                got.append("error")
        assert got == [{"n": 1}, "error", {"n": 2}, {"n": 3}, "error", {"n": 4}]
        client.send(b'{"n": 5}')  # the client's channel goes on
        assert server.recv(timeout=10) == {"n": 5}
        client.close()
        server.close()


def test_asyncio_server_delivers_the_error_in_place() -> None:
    async def main() -> list[Any]:
        async with await aio.listen("http://127.0.0.1:0/api", codec="json") as lst:
            accepting = asyncio.ensure_future(lst.accept(timeout=10))
            client = await asyncio.to_thread(ipcwire.connect, lst.url, codec=JsonAsIs(), timeout=10)
            server = await accepting
            await asyncio.to_thread(_send_all, client)
            got: list[Any] = []
            while len(got) < 6:
                try:
                    got.extend(await server.recv_many(timeout=10))
                except RemoteProtocolError:
                    got.append("error")
            await asyncio.to_thread(client.close)
            await server.aclose()
            return got

    assert asyncio.run(main()) == [{"n": 1}, "error", {"n": 2}, {"n": 3}, "error", {"n": 4}]


def test_a_request_without_a_channel_still_gets_400() -> None:
    """session=False (one POST, its answer the reply): a body that does not decode is still
    a 400 the client reads as RemoteProtocolError (rest.md's table)."""
    with ipcwire.listen("http://127.0.0.1:0/api", codec="json") as lst:
        threading.Thread(
            target=lst.serve, args=(lambda ch: ch.send(ch.recv()),), daemon=True
        ).start()
        client = ipcwire.connect(lst.url, codec=JsonAsIs(), session=False, timeout=10)
        with pytest.raises(RemoteProtocolError, match="400"):
            client.request(b"\xff{", timeout=10)
        client.close()
