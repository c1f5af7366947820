"""close() while the server's application takes nothing: a send blocked for room ends at
once with ChannelClosed, what close() can still post goes first, and what it cannot is not
passed off as a clean end.

A probe (a client sending 1 MB messages to a server channel that did not read, then
``close()`` from another thread) found the blocked send held for close()'s whole 10 s flush,
and then 5 of the 10 messages whose ``send()`` had returned lost while the server channel
ended with a clean ``EndOfChannel``: nobody learnt of the loss. The client's DELETE now says
how many messages it could not post (``Ipcwire-Undelivered``), and the server channel ends
with ``ChannelBroken`` saying so.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, ChannelClosed, EndOfChannel, Timeout
from ipcwire.http import _aio_client as http_aio
from ipcwire.http import _blocking_client as http_blocking

MB = 1_000_000


def _fill(ch: ipcwire.Channel) -> int:
    """Send 1 MB messages until one waits for room (the server takes nothing): how many
    went (the one that timed out was not sent)."""
    n = 0
    while True:
        try:
            ch.send(bytes([n]) * MB, timeout=1)
        except Timeout:
            return n
        n += 1


def _receive_all(ch: ipcwire.Channel) -> tuple[list[bytes], BaseException]:
    got: list[bytes] = []
    while True:
        try:
            got.append(ch.recv(timeout=10))
        except ipcwire.IpcwireError as exc:
            return got, exc


def _pair(lst: ipcwire.Listener) -> tuple[ipcwire.Channel, ipcwire.Channel]:
    box: list[ipcwire.Channel] = []
    t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
    t.start()
    client = ipcwire.connect(lst.url, timeout=10)
    t.join()
    return client, box[0]


def test_a_blocked_send_ends_at_once_and_what_was_queued_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_blocking, "FLUSH_TIMEOUT", 60.0)
    with ipcwire.listen("http://127.0.0.1:0/x") as lst:
        client, server = _pair(lst)
        sent = _fill(client)
        ended: list[BaseException] = []
        done = threading.Event()

        def blocked_send() -> None:
            try:
                client.send(b"late" * 1000, timeout=60)
            except BaseException as exc:
                ended.append(exc)
            done.set()

        sender = threading.Thread(target=blocked_send)
        sender.start()
        closing = threading.Thread(target=client.close)
        closing.start()  # it flushes: up to 60 s while the server takes nothing
        assert done.wait(10), "the blocked send waited for close()'s flush"
        assert isinstance(ended[0], ChannelClosed), ended
        assert closing.is_alive()  # (still flushing: the send did not wait for it)
        got, end = _receive_all(server)  # the server reads: the flush ends, close() too
        closing.join(20)
        assert [m[0] for m in got] == list(range(sent)) and all(len(m) == MB for m in got)
        assert isinstance(end, EndOfChannel), end
        server.close()


def test_what_close_could_not_post_ends_the_server_channel_broken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_blocking, "FLUSH_TIMEOUT", 0.5)
    with ipcwire.listen("http://127.0.0.1:0/x") as lst:
        client, server = _pair(lst)
        sent = _fill(client)
        client.close()  # gives up after 0.5 s: the server took nothing
        got, end = _receive_all(server)
        assert 0 < len(got) < sent  # some were still in the client when it closed
        assert [m[0] for m in got] == list(range(len(got)))
        assert isinstance(end, ChannelBroken), end  # before: EndOfChannel
        assert f"closed with {sent - len(got)} message(s) it could not deliver" in str(end)
        server.close()


async def _afill(ch: Any) -> int:
    n = 0
    while True:
        try:
            await ch.send(bytes([n]) * MB, timeout=1)
        except Timeout:
            return n
        n += 1


async def _apair(lst: Any) -> tuple[Any, Any]:
    accepting = asyncio.ensure_future(lst.accept(timeout=10))
    client = await aio.connect(lst.url, timeout=10)
    return client, await accepting


def test_asyncio_a_blocked_send_ends_at_once_and_what_was_queued_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_aio, "FLUSH_TIMEOUT", 60.0)

    async def main() -> None:
        async with await aio.listen("http://127.0.0.1:0/x") as lst:
            client, server = await _apair(lst)
            sent = await _afill(client)
            blocked = asyncio.ensure_future(client.send(b"late", timeout=60))
            await asyncio.sleep(0)  # (it runs up to its wait for room)
            closing = asyncio.ensure_future(client.aclose())
            with pytest.raises(ChannelClosed):
                await asyncio.wait_for(blocked, 10)
            assert not closing.done()  # (still flushing: the send did not wait for it)
            got: list[bytes] = []
            with pytest.raises(EndOfChannel):
                while True:
                    got.append(await server.recv(timeout=10))
            await asyncio.wait_for(closing, 20)
            assert [m[0] for m in got] == list(range(sent))
            await server.aclose()

    asyncio.run(main())


def test_asyncio_what_close_could_not_post_ends_the_server_channel_broken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_aio, "FLUSH_TIMEOUT", 0.5)

    async def main() -> None:
        async with await aio.listen("http://127.0.0.1:0/x") as lst:
            client, server = await _apair(lst)
            sent = await _afill(client)
            await client.aclose()  # gives up after 0.5 s: the server took nothing
            got: list[bytes] = []
            with pytest.raises(ChannelBroken, match="could not deliver"):
                while True:
                    got.append(await server.recv(timeout=10))
            assert 0 < len(got) < sent
            assert [m[0] for m in got] == list(range(len(got)))
            await server.aclose()

    asyncio.run(main())
