"""A shared-memory peer that ended after an error is told from one that closed cleanly.

A ``with`` block (or a ``serve()`` handler) left by an exception sends its reason on the
liveness socket and lets go of its sending ring without the closed flag; the other side gets
every message sent before, then ``ChannelBroken`` naming the exception's type (never its
text). A clean close is ``EndOfChannel`` and puts nothing on the socket, as before.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tests._proc import python, wait_line

import ipcwire
import ipcwire.aio
from ipcwire.shm._ending import PeerEnd
from ipcwire.shm._frames import encode_frame
from ipcwire.shm._link import Link
from ipcwire.shm._setup import accept_link, connect_link
from ipcwire.shm.blocking import ShmChannel

from ._util import PAIRS, ring_pair

TYPE = "ValueError raised while the channel was open"


@contextmanager
def links(
    client_impl: str, server_impl: str, capacity: int = 1 << 14
) -> Iterator[tuple[Link, Link]]:
    """A connected (client, server) pair of links in this process, each ring implementation
    as given."""
    a, b = socket.socketpair()
    box: list[Link | BaseException] = []

    def serve() -> None:
        try:
            box.append(accept_link(b, deadline=time.monotonic() + 10, name="srv", impl=server_impl))
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=serve)
    t.start()
    try:
        client = connect_link(
            a,
            deadline=time.monotonic() + 10,
            name="cli",
            impl=client_impl,
            capacity=(capacity, capacity),
        )
    finally:
        t.join()
    server = box[0]
    assert isinstance(server, Link), server
    try:
        yield client, server
    finally:
        client.close()
        server.close()


@contextmanager
def pair(url: str, **options: Any) -> Iterator[tuple[ShmChannel, ShmChannel]]:
    """A connected (client, server) pair of blocking shm channels (``capacity`` is the
    client's option)."""
    listen_options = {k: v for k, v in options.items() if k != "capacity"}
    with ipcwire.listen(url, **listen_options) as lst:
        client = ipcwire.connect(lst.url, timeout=10, **options)
        server = lst.accept(timeout=10)
        assert isinstance(client, ShmChannel) and isinstance(server, ShmChannel)
        with client, server:
            yield client, server


# -- serve() handlers ---------------------------------------------------------------------


def test_serve_handler_that_raises_is_channel_broken(shm_url: Callable[[], str]) -> None:
    def handler(ch: ipcwire.Channel) -> None:
        msg = ch.recv(timeout=10)
        ch.send(msg)
        if msg == b"fail":
            raise ZeroDivisionError("inner detail")

    with ipcwire.listen(shm_url()) as lst:
        t = threading.Thread(target=lst.serve, args=(handler,), daemon=True)
        t.start()
        for msg, want in ((b"ok", ipcwire.EndOfChannel), (b"fail", ipcwire.ChannelBroken)):
            with ipcwire.connect(lst.url, timeout=10) as ch:
                assert ch.request(msg, timeout=10) == msg
                with pytest.raises(want) as info:
                    ch.recv(timeout=10)
                if want is ipcwire.ChannelBroken:
                    text = str(info.value)
                    assert "ZeroDivisionError raised while the channel was open" in text
                    assert "after an error on its side" in text
                    assert "inner detail" not in text
                    assert info.value.endpoint == lst.url
                    with pytest.raises(ipcwire.ChannelBroken, match="ZeroDivisionError"):
                        ch.recv(timeout=10)  # and it stays so
        lst.close()
        t.join(10)
        assert not t.is_alive()


def test_asyncio_serve_handler_that_raises_is_channel_broken(
    shm_url: Callable[[], str],
) -> None:
    async def handler(ch: ipcwire.aio.AioChannel) -> None:
        msg = await ch.recv(timeout=10)
        await ch.send(msg)
        if msg == b"fail":
            raise LookupError("inner detail")

    async def main() -> list[str]:
        seen = []
        async with await ipcwire.aio.listen(shm_url()) as lst:
            task = asyncio.create_task(lst.serve(handler))
            for msg in (b"ok", b"fail"):
                async with await ipcwire.aio.connect(lst.url, timeout=10) as ch:
                    assert await ch.request(msg, timeout=10) == msg
                    try:
                        await ch.recv(timeout=10)
                    except ipcwire.IpcwireError as exc:
                        seen.append(f"{type(exc).__name__}: {exc}")
            await lst.aclose()
            await task
        return seen

    clean, failed = asyncio.run(main())
    assert clean.startswith("EndOfChannel")
    assert failed.startswith("ChannelBroken")
    assert "LookupError raised while the channel was open" in failed
    assert "inner detail" not in failed


def test_asyncio_and_blocking_ends_tell_each_other(shm_url: Callable[[], str]) -> None:
    """An asyncio server's failure reaches a blocking client, and a blocking client's
    failure reaches an asyncio server."""

    def client(url: str, fail: bool) -> list[object]:
        got: list[object] = []
        ch = ipcwire.connect(url, timeout=10)
        if fail:
            with pytest.raises(KeyError), ch:
                ch.send(b"last")
                raise KeyError("client secret")
            return got
        with ch:
            got.append(ch.recv(timeout=10))
            try:
                ch.recv(timeout=10)
            except ipcwire.IpcwireError as exc:
                got.append(exc)
        return got

    async def main() -> tuple[list[object], str]:
        async with await ipcwire.aio.listen(shm_url()) as lst:
            fut = asyncio.ensure_future(asyncio.to_thread(client, lst.url, False))
            server = await lst.accept(timeout=10)
            with pytest.raises(TimeoutError):
                async with server:
                    await server.send(b"first")
                    raise TimeoutError("server secret")
            got = await fut
            fut = asyncio.ensure_future(asyncio.to_thread(client, lst.url, True))
            async with await lst.accept(timeout=10) as server:
                await fut
                assert await server.recv(timeout=10) == b"last"
                try:
                    await server.recv(timeout=10)
                    end = "nothing"
                except ipcwire.IpcwireError as exc:
                    end = f"{type(exc).__name__}: {exc}"
        return got, end

    got, end = asyncio.run(main())
    assert got[0] == b"first"
    assert isinstance(got[1], ipcwire.ChannelBroken)
    assert "TimeoutError raised while the channel was open" in str(got[1])
    assert "server secret" not in str(got[1])
    assert end.startswith("ChannelBroken: the client of ")
    assert "KeyError raised while the channel was open" in end
    assert "client secret" not in end


def test_a_client_process_whose_with_block_raises(shm_url: Callable[[], str]) -> None:
    """Across processes: the client's with block raises, the server is told the type."""
    with ipcwire.listen(shm_url()) as lst:
        proc = python(
            f"import ipcwire\nch = ipcwire.connect({lst.url!r}, timeout=10)\n"
            "try:\n"
            "    with ch:\n"
            "        ch.send(b'first'); ch.send(b'second')\n"
            "        print('sent', flush=True)\n"
            "        raise PermissionError('secret text')\n"
            "except PermissionError:\n"
            "    print('raised', flush=True)\n"
            "input()\n"  # alive until told: the end is the with block's, not the exit's
        )
        with lst.accept(timeout=20) as ch:
            assert wait_line(proc) == "sent"
            assert wait_line(proc) == "raised"
            assert ch.recv(timeout=10) == b"first"
            assert ch.recv(timeout=10) == b"second"
            with pytest.raises(ipcwire.ChannelBroken, match="PermissionError raised") as info:
                ch.recv(timeout=10)
            assert "secret text" not in str(info.value)
            assert str(info.value).startswith(f"the client of {lst.url} ended the channel")
        proc.communicate("\n", timeout=20)
        assert proc.returncode == 0


# -- edges --------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_failure_with_the_ring_full_delivers_every_message_first(
    shm_url: Callable[[], str], api: str
) -> None:
    """The reason does not go through the ring, so a full ring does not hold it back, and
    close() does not wait: the peer reads every message, in order, then the failure."""
    if api == "blocking":
        with pair(shm_url(), capacity=4096) as (client, server):
            sent = 0
            with pytest.raises(ValueError), client:
                while True:
                    try:
                        client.send(sent.to_bytes(4, "big") * 64, timeout=0)
                    except ipcwire.Timeout:
                        break
                    sent += 1
                began = time.monotonic()
                raise ValueError("secret")
            assert time.monotonic() - began < 1.0
            assert sent > 5
            for i in range(sent):
                assert server.recv(timeout=10) == i.to_bytes(4, "big") * 64
            with pytest.raises(ipcwire.ChannelBroken, match=TYPE):
                server.recv(timeout=10)
        return

    async def main() -> None:
        async with await ipcwire.aio.listen(shm_url()) as lst:
            client = await ipcwire.aio.connect(lst.url, timeout=10, capacity=4096)
            async with await lst.accept(timeout=10) as server:
                sent = 0
                with pytest.raises(ValueError):
                    async with client:
                        while True:
                            try:
                                await client.send(sent.to_bytes(4, "big") * 64, timeout=0)
                            except ipcwire.Timeout:
                                break
                            sent += 1
                        raise ValueError("secret")
                assert sent > 5
                for i in range(sent):
                    assert await server.recv(timeout=10) == i.to_bytes(4, "big") * 64
                with pytest.raises(ipcwire.ChannelBroken, match=TYPE):
                    await server.recv(timeout=10)

    asyncio.run(main())


@pytest.mark.parametrize(("mine", "theirs"), PAIRS)
def test_every_ring_implementation_pair(mine: str, theirs: str) -> None:
    """C and Python rings, each way: a failure is told after the messages, a clean close is
    the end of the channel."""
    for reason, want in ((TYPE, ipcwire.ChannelBroken), ("", ipcwire.EndOfChannel)):
        with links(mine, theirs) as (client, server):
            client.tx.send(b"one")
            client.tx.send_many([b"two", b"three"])
            client.close(reason)
            assert [server.rx.recv(5) for _ in range(3)] == [b"one", b"two", b"three"]
            with pytest.raises(want) as info:
                server.rx.recv(5)
            if reason:
                assert str(info.value).startswith("the client of srv ended the channel after ")
                assert TYPE in str(info.value)
            with pytest.raises(ipcwire.ChannelBroken):
                server.tx.send(b"x", 5)  # the client stopped reading
        with links(mine, theirs) as (client, server):
            server.tx.send(b"back")
            server.close(reason)
            assert client.rx.recv(5) == b"back"
            with pytest.raises(want, match=r"^cli ended the channel|peer closed"):
                client.rx.view(5)


@pytest.mark.parametrize(("mine", "theirs"), PAIRS)
def test_a_failure_in_the_middle_of_a_message_says_so(mine: str, theirs: str) -> None:
    """A send stopped part-way (its timeout, with the peer not reading), then the failure:
    the torn message is discarded and the peer is told both."""
    with links(mine, theirs, capacity=4096) as (client, server):
        client.tx.send(b"whole")
        with pytest.raises(ipcwire.Timeout, match="part-way"):
            client.tx.send(b"y" * 20000, 0.05)
        client.close("Timeout raised while the channel was open")
        assert server.rx.recv(5) == b"whole"
        with pytest.raises(ipcwire.ChannelBroken, match="in the middle of a message") as info:
            server.rx.recv(5)
        assert "Timeout raised while the channel was open" in str(info.value)


@pytest.mark.parametrize(("mine", "theirs"), PAIRS)
def test_an_older_peer_sees_a_failure_as_a_peer_that_went_away(mine: str, theirs: str) -> None:
    """An ipcwire before this change has no on_end hook and never reads the liveness socket:
    for it a failure is a peer that went away (ChannelBroken), never a clean end; and a clean
    close is what it always was: the closed flag, nothing on the socket."""
    with links(mine, theirs) as (client, server):
        server.rx.on_end = None  # what an older ipcwire is
        client.tx.send(b"one")
        client.close(TYPE)
        assert server.rx.recv(5) == b"one"
        with pytest.raises(ipcwire.ChannelBroken, match="went away without closing"):
            server.rx.recv(5)
    with links(mine, theirs) as (client, server):
        server.rx.on_end = None
        client.tx.send(b"one")
        client.close()
        assert server.rx.recv(5) == b"one"
        with pytest.raises(ipcwire.EndOfChannel):
            server.rx.recv(5)
        server.sock.settimeout(5)
        assert server.sock.recv(100) == b""  # a clean close said nothing on the socket


def test_the_peers_reason_is_bounded_and_made_readable() -> None:
    """What the peer sends is untrusted: at most 1024 bytes of it are shown, control
    characters as ``?``; something that is not a reason leaves the ring's own error."""
    end = ipcwire.EndOfChannel("x: the peer closed its end", endpoint="x")
    for sent, want in (
        ({"shm": 1, "failed": "\x1b[2J" + "A" * 5000}, "?[2J" + "A" * 1020),
        ({"shm": 1, "failed": "Bad\nType raised"}, "Bad?Type raised"),
    ):
        a, b = socket.socketpair()
        with a, b:
            a.sendall(encode_frame(sent))
            a.close()
            got = PeerEnd(b, "shm://x", "shm://x")(end)
            assert isinstance(got, ipcwire.ChannelBroken)
            assert f"({want});" in str(got)
            assert got.endpoint == "shm://x"
    for junk in (b"\x00\x00\x00\x05nope!", b"\xff\xff\xff\xff", encode_frame({"shm": 1}), b""):
        a, b = socket.socketpair()
        with a, b:
            a.sendall(junk)
            assert PeerEnd(b, "shm://x", "shm://x")(end) is end


def test_close_after_a_failure_does_not_wait_for_a_peer_that_does_not_read(
    shm_url: Callable[[], str],
) -> None:
    """Nothing is written into the ring, so the sending side's close is as prompt as
    close(); the peer that never reads still gets the failure when it does."""
    with pair(shm_url(), capacity=4096) as (client, server):
        with pytest.raises(OSError), server:
            server.send(b"z" * 2000, timeout=1)
            server.send(b"z" * 2000, timeout=1)
            began = time.monotonic()
            raise OSError("disk")
        assert time.monotonic() - began < 1.0
        got: list[bytes] = []
        while len(got) < 2:
            got += client.recv_many(timeout=10)
        assert got == [b"z" * 2000] * 2
        with pytest.raises(ipcwire.ChannelBroken, match="OSError raised"):
            client.recv_many(timeout=10)


@pytest.mark.parametrize(("producer", "consumer"), PAIRS)
def test_the_rings_on_end_hook_and_abandon(producer: str, consumer: str) -> None:
    """``on_end`` sees the peer's end (closed, or gone) and gives the error to raise; what it
    returns that is not an exception is ignored; what it raises propagates. ``abandon()``
    ends a producer without the closed flag."""
    seen: list[Exception] = []

    def hook(exc: Exception) -> Exception:
        seen.append(exc)
        return ipcwire.ChannelBroken("replaced")

    tx, rx, _mm = ring_pair(producer=producer, consumer=consumer)
    rx.on_end = hook
    assert rx.on_end is hook
    tx.send(b"a")
    tx.close()
    assert rx.recv(5) == b"a"
    with pytest.raises(ipcwire.ChannelBroken, match=r"^replaced$"):
        rx.recv(5)
    assert isinstance(seen[0], ipcwire.EndOfChannel)
    rx.on_end = lambda exc: 42  # type: ignore[assignment,return-value]
    with pytest.raises(ipcwire.EndOfChannel):
        rx.recv(0)

    def raising(exc: Exception) -> Exception:
        raise KeyError("from the hook")

    rx.on_end = raising
    with pytest.raises(KeyError):
        rx.recv_many(0, 5)
    rx.on_end = None
    with pytest.raises(ipcwire.EndOfChannel):
        rx.view(0)
    rx.close()

    tx, rx, _mm = ring_pair(producer=producer, consumer=consumer)
    rx.on_end = hook
    tx.send(b"b")
    tx.abandon()
    assert tx.closed
    assert rx.recv(5) == b"b"
    with pytest.raises(ipcwire.ChannelBroken, match=r"^replaced$"):
        rx.recv(5)
    assert "went away without closing" in str(seen[-1])  # no closed flag: gone
    rx.close()
