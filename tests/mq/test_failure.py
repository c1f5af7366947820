"""A failed end is told from a clean close on mq channels (``tells_failure``).

A ``with`` block or ``serve()`` handler left by an exception ends the peer's channel with
ChannelBroken naming the exception's type (never its text), after every message sent before
it; a clean end is still EndOfChannel. The edge of mq: the peer's queue is full at the close,
so the end-of-channel marker cannot be posted (the end pipe carries the failure then), or
there is no end pipe (the marker waits for room, and arrives after the messages). And the
wire: a clean close is the bytes it always was, and a peer that does not offer failures (an
earlier version) is never sent one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun
from tests._proc import child, wait_line
from tests.mq._pairs import afill, apair, fill, msg, pair

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.errors import ChannelBroken, EndOfChannel
from ipcwire.mq._client import ClientSession
from ipcwire.mq._ends import MAX_REASON, end_pipe_path, post_end, read_end
from ipcwire.mq._proto import Hello
from ipcwire.mq._rendezvous import (
    bind_listener,
    release_rendezvous,
)
from ipcwire.mq._session import (
    Deferred,
    ServerSession,
    announced,
    channel_wire,
)
from ipcwire.mq.aio import AioMqChannel
from ipcwire.mq.blocking import MqChannel
from ipcwire.options import ChannelOptions


class SecretError(Exception):
    """What the failing side raises; its text must not cross."""


def _told(exc: BaseException, name: str = "SecretError") -> None:
    assert isinstance(exc, ChannelBroken), repr(exc)
    assert f"{name} raised while the channel was open" in str(exc)
    assert "after an error on its side" in str(exc)
    assert "inner text" not in str(exc)


def _read_to_the_failure(ch: MqChannel, n: int, timeout: float = 5) -> None:
    """The ``n`` messages sent before the failure, in order, then ChannelBroken (again)."""
    for i in range(n):
        assert ch.recv(timeout=timeout) == msg(i)
    for _ in range(2):
        with pytest.raises(ChannelBroken) as info:
            ch.recv(timeout=timeout)
        _told(info.value)


async def _aread_to_the_failure(ch: AioMqChannel, n: int, timeout: float = 5) -> None:
    for i in range(n):
        assert await ch.recv(timeout=timeout) == msg(i)
    for _ in range(2):
        with pytest.raises(ChannelBroken) as info:
            await ch.recv(timeout=timeout)
        _told(info.value)


# -- serve() handlers -----------------------------------------------------------------------
def test_blocking_serve_handler_that_raises_is_not_a_clean_end(
    mq_url: Callable[..., str],
) -> None:
    def handler(ch: ipcwire.Channel) -> None:
        msg = ch.recv(timeout=10)
        ch.send(msg)
        if msg == b"fail":
            raise SecretError("inner text")

    with ipcwire.listen(mq_url()) as lst:
        t = threading.Thread(target=lst.serve, args=(handler,), daemon=True)
        t.start()
        try:
            for msg in (b"ok", b"fail", b"ok"):
                with ipcwire.connect(lst.url, timeout=10) as ch:
                    assert ch.request(msg, timeout=10) == msg
                    if msg == b"ok":
                        with pytest.raises(EndOfChannel):
                            ch.recv(timeout=10)
                    else:
                        with pytest.raises(ChannelBroken) as info:
                            ch.recv(timeout=10)
                        _told(info.value)
        finally:
            lst.close()
            t.join(10)
    assert not t.is_alive()


@pytest.mark.parametrize("client_api", ["asyncio", "blocking"])
def test_asyncio_serve_handler_that_raises_is_not_a_clean_end(
    mq_url: Callable[..., str], aio_run: AioRun, client_api: str
) -> None:
    async def handler(ch: aio.AioChannel) -> None:
        msg = await ch.recv(timeout=10)
        await ch.send(msg)
        if msg == b"fail":
            raise SecretError("inner text")

    def blocking_client(url: str, msg: bytes) -> BaseException:
        with ipcwire.connect(url, timeout=10) as ch:
            assert ch.request(msg, timeout=10) == msg
            try:
                ch.recv(timeout=10)
            except (EndOfChannel, ChannelBroken) as exc:
                return exc
        raise AssertionError("a message after the reply")

    async def client(url: str, msg: bytes) -> BaseException:
        if client_api == "blocking":  # a thread, so the loop serves meanwhile
            return await asyncio.to_thread(blocking_client, url, msg)
        async with await aio.connect(url, timeout=10) as ch:
            assert await ch.request(msg, timeout=10) == msg
            try:
                await ch.recv(timeout=10)
            except (EndOfChannel, ChannelBroken) as exc:
                return exc
        raise AssertionError("a message after the reply")

    async def main() -> None:
        async with await aio.listen(mq_url()) as lst:
            task = asyncio.ensure_future(lst.serve(handler))
            try:
                for msg in (b"ok", b"fail", b"ok"):
                    end = await client(lst.url, msg)
                    if msg == b"ok":
                        assert isinstance(end, EndOfChannel), repr(end)
                    else:
                        _told(end)
            finally:
                await lst.aclose()
                await asyncio.wait_for(task, 10)

    aio_run(main())


# -- the peer's queue full at the close: the end pipe carries the failure ---------------------
@pytest.mark.parametrize("timeout", [5, 0], ids=["recv-waits", "recv-nowait"])
@pytest.mark.parametrize("failer", ["client", "server"])
def test_blocking_failure_with_the_peers_queue_full(
    mq_url: Callable[..., str], failer: str, timeout: float
) -> None:
    listener, client, server = pair(mq_url())
    a, b = (client, server) if failer == "client" else (server, client)
    try:
        n = fill(a)
        assert n > 0
        with pytest.raises(SecretError), a:  # returns at once: nobody reads meanwhile
            raise SecretError("inner text")
        _read_to_the_failure(b, n, timeout)
    finally:
        a.close()
        b.close()
        listener.close()


@pytest.mark.parametrize("timeout", [5, 0], ids=["recv-waits", "recv-nowait"])
@pytest.mark.parametrize("failer", ["client", "server"])
def test_asyncio_failure_with_the_peers_queue_full(
    mq_url: Callable[..., str], aio_run: AioRun, failer: str, timeout: float
) -> None:
    async def main() -> None:
        listener, client, server = await apair(mq_url())
        a, b = (client, server) if failer == "client" else (server, client)
        try:
            n = await afill(a)
            assert n > 0
            with pytest.raises(SecretError):
                async with a:
                    raise SecretError("inner text")
            await _aread_to_the_failure(b, n, timeout)
        finally:
            await a.aclose()
            await b.aclose()
            listener.close()

    aio_run(main())


def test_a_clean_close_with_the_peers_queue_full_is_still_a_clean_end(
    mq_url: Callable[..., str],
) -> None:
    listener, a, b = pair(mq_url())
    try:
        n = fill(a)
        with a:
            pass
        for i in range(n):
            assert b.recv(timeout=5) == msg(i)
        with pytest.raises(EndOfChannel):
            b.recv(timeout=5)
    finally:
        a.close()
        b.close()
        listener.close()


_CHILD = """
import asyncio, sys, ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout
url, role, api = sys.argv[1:]


class SecretError(Exception):
    pass


def fill(ch):
    n = 0
    while True:
        try:
            ch.send(bytes([n % 256]) * 8000, timeout=0)
        except Timeout:
            return n
        n += 1


def blocking():
    listener = None
    if role == "listener":
        listener = ipcwire.listen(url)
        print("ready", flush=True)
        ch = listener.accept(timeout=20)
    else:
        ch = ipcwire.connect(url, timeout=20)
    try:
        with ch:
            print(fill(ch), flush=True)
            raise SecretError("inner text")
    except SecretError:
        pass
    if listener is not None:
        listener.close()


async def main():
    listener = None
    if role == "listener":
        listener = await aio.listen(url)
        print("ready", flush=True)
        ch = await listener.accept(timeout=20)
    else:
        ch = await aio.connect(url, timeout=20)
    n = 0
    try:
        async with ch:
            while True:
                try:
                    await ch.send(bytes([n % 256]) * 8000, timeout=0)
                except Timeout:
                    break
                n += 1
            print(n, flush=True)
            raise SecretError("inner text")
    except SecretError:
        pass
    if listener is not None:
        listener.close()


blocking() if api == "blocking" else asyncio.run(main())
"""


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
@pytest.mark.parametrize("failer", ["client", "server"])
def test_a_process_that_fails_and_exits_at_once_is_not_a_clean_end(
    mq_url: Callable[..., str], api: str, failer: str
) -> None:
    """The failer fills the peer's queue, leaves its with block by an exception and exits:
    the peer reads what it sent, then ChannelBroken naming the type (not 'exited without
    closing', not EndOfChannel)."""
    url = mq_url()
    role = "listener" if failer == "server" else "client"
    code = f"import sys\nsys.argv[1:] = {[url, role, api]}\n" + _CHILD
    with ExitStack() as stack:
        if failer == "client":
            listener = stack.enter_context(ipcwire.listen(url))
            proc = stack.enter_context(child(code))
            ch = listener.accept(timeout=20)
        else:
            proc = stack.enter_context(child(code))
            assert wait_line(proc) == "ready"
            ch = ipcwire.connect(url, timeout=20)
        assert isinstance(ch, MqChannel)
        with ch:
            n = int(wait_line(proc))
            assert proc.wait(timeout=20) == 0  # failed, closed and gone
            _read_to_the_failure(ch, n)


# -- without an end pipe: the marker carries the failure, after the messages -----------------
def _pipeless_pair(url: str, q: Any, options: ChannelOptions) -> tuple[MqChannel, MqChannel]:
    """A channel whose listener could not open the end pipe (as in test_close_full_queue)."""
    session = ClientSession(q.name, options, maxmsg=None, msgsize=None, mode=0o600)
    accepted: list[ServerSession] = []
    try:
        os.unlink(end_pipe_path(session.up.name))
        assert q.try_send(session.hello(), 0)
        accepted += announced(q, options, Deferred())
        [s] = accepted
        assert s.done and s.ends is None and s.fails
        welcome = session.dn.try_recv()
        assert welcome is not None and session.feed(*welcome)
        pidfd = session.finish()
        assert session.ends is None and session.fails_agreed
    except BaseException:
        session.abort()
        for s in accepted:
            s.close()
        raise
    client = MqChannel(
        session.dn,
        session.up,
        channel_wire(options, session.hs),
        url,
        peer_pid=session.server_pid,
        pidfd=pidfd,
        ends=None,
        tells=True,
    )
    server = MqChannel(
        s.up,
        s.dn,
        channel_wire(options, s.hs),
        url,
        peer_pid=s.pid,
        pidfd=s.pidfd,
        ends=None,
        tells=True,
    )
    return client, server


def test_without_an_end_pipe_a_failure_waits_for_room_and_comes_after_the_messages(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url()
    endpoint = parse_url(url)
    options = ChannelOptions.build(endpoint, {})
    q, lock = bind_listener(endpoint, {}, mode=0o600, backlog=None)
    try:
        a, b = _pipeless_pair(url, q, options)
        try:
            n = fill(a)
            left: list[BaseException] = []

            def fail() -> None:  # close() waits (up to a second) for room for the marker
                try:
                    with a:
                        raise SecretError("inner text")
                except BaseException as exc:
                    left.append(exc)

            t = threading.Thread(target=fail)
            t.start()
            _read_to_the_failure(b, n)  # reading makes the room
            t.join(10)
            assert not t.is_alive() and len(left) == 1 and isinstance(left[0], SecretError)
        finally:
            a.close()
            b.close()
    finally:
        release_rendezvous(q, lock, q.name, options, unlink=True)


# -- the reason: bounded, the type only, shown safely ---------------------------------------
def test_a_long_reason_is_bounded_and_a_small_msgsize_still_carries_it(
    mq_url: Callable[..., str],
) -> None:
    """An exception type named with 3000 characters; the client's queue has 64-byte
    messages (the marker holds 64 bytes of the reason; the end pipe up to 1024)."""
    long_error = type("E" * 3000, (Exception,), {})
    url = mq_url("msgsize=64")
    listener, client, server = pair(url)
    try:
        client.send(b"before")
        with pytest.raises(long_error), client:
            raise long_error("inner text")
        assert server.recv(timeout=5) == b"before"
        with pytest.raises(ChannelBroken) as info:
            server.recv(timeout=5)
        text = str(info.value)
        assert "E" * MAX_REASON in text and "E" * (MAX_REASON + 1) not in text
    finally:
        client.close()
        server.close()
        listener.close()


def test_the_end_pipe_record_of_a_peer_is_untrusted_text(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "end")  # as an end pipe: one descriptor, read-write, non-blocking
    r = w = os.open(tmp_path / "end", os.O_RDWR | os.O_NONBLOCK)
    try:

        def told(record: bytes) -> str | None:
            os.write(w, record)
            got = read_end(r)
            # put back (behind what was not read): the pipe still says the peer closed
            assert len(os.read(r, 10000)) == len(record)
            return got

        assert read_end(r) is None  # nothing there yet
        assert told(b"\x01bad\x1b[31m\xff\nend") == "bad?[31m\ufffd?end"  # (readable_reason)
        assert told(b"\x01" + b"x" * 5000) == "x" * MAX_REASON
        assert told(b"\x01") == "no reason given"  # still a failure
        assert told(b"\0") == ""  # a clean close
        post_end(w, b"ValueError raised while the channel was open")
        assert read_end(r) == "ValueError raised while the channel was open"
        os.read(r, 10000)
        post_end(w)
        assert os.read(r, 100) == b"\0"  # a clean close: the byte it always was
    finally:
        os.close(r)


# -- the wire: a clean close as before; no failure to a peer that does not offer it ---------
def _agreed_pair(url: str, q: Any, options: ChannelOptions, *, offer: bool) -> tuple[Any, Any]:
    """A channel opened by hand; ``offer=False`` takes ``"fails"`` out of the client's
    announcement (what a client of the earlier version sends)."""
    session = ClientSession(q.name, options, maxmsg=None, msgsize=None, mode=0o600)
    accepted: list[ServerSession] = []
    try:
        hello = Hello.decode(session.hello(), url)
        assert hello.fails
        if not offer:
            hello = dataclasses.replace(hello, fails=False)
            assert b"fails" not in hello.encode()
        assert q.try_send(hello.encode(), 0)
        accepted += announced(q, options, Deferred())
        [s] = accepted
        assert s.done and s.ends is not None and s.fails is offer
        welcome = session.dn.try_recv()
        assert welcome is not None
        assert (b'"fails":true' in welcome[0]) is offer  # the listener answers in kind
        assert session.feed(*welcome)
        pidfd = session.finish()
        assert session.fails_agreed is offer
    except BaseException:
        session.abort()
        for s in accepted:
            s.close()
        raise
    client = MqChannel(
        session.dn,
        session.up,
        channel_wire(options, session.hs),
        url,
        peer_pid=session.server_pid,
        pidfd=pidfd,
        ends=session.ends,
        tells=session.fails_agreed,
    )
    server = MqChannel(
        s.up,
        s.dn,
        channel_wire(options, s.hs),
        url,
        peer_pid=s.pid,
        pidfd=s.pidfd,
        ends=s.ends,
        tells=s.fails,
    )
    return client, server


@pytest.mark.parametrize(
    ("offer", "fail", "marker", "record"),
    [
        (True, False, b"", b"\0"),
        (False, False, b"", b"\0"),
        (False, True, b"", b"\0"),  # an earlier version's peer: the failure ends as a close
        (True, True, b"SecretError raised while the channel was open", None),
    ],
    ids=["clean", "clean-to-old", "failure-to-old", "failure"],
)
def test_what_goes_on_the_wire(
    mq_url: Callable[..., str], offer: bool, fail: bool, marker: bytes, record: bytes | None
) -> None:
    """What the peer's queue and the end pipe hold after the close, read raw."""
    url = mq_url()
    endpoint = parse_url(url)
    options = ChannelOptions.build(endpoint, {})
    q, lock = bind_listener(endpoint, {}, mode=0o600, backlog=None)
    try:
        client, server = _agreed_pair(url, q, options, offer=offer)
        try:
            client.send(b"before")
            with pytest.raises(SecretError) if fail else ExitStack(), client:
                if fail:
                    raise SecretError("inner text")
            assert server._in.try_recv() == (b"before", 1)
            assert server._in.try_recv() == (marker, 0)
            assert server._ends is not None
            assert os.read(server._ends, 4096) == (record or b"\x01" + marker)
        finally:
            client.close()
            server.close()
    finally:
        release_rendezvous(q, lock, q.name, options, unlink=True)


def test_a_failure_to_a_peer_that_does_not_offer_it_ends_as_a_close_did(
    mq_url: Callable[..., str],
) -> None:
    """Both ways, with the listener of this version toward a client that does not offer
    failures: the failed side's peer gets EndOfChannel after the messages, as ever."""
    url = mq_url()
    endpoint = parse_url(url)
    options = ChannelOptions.build(endpoint, {})
    q, lock = bind_listener(endpoint, {}, mode=0o600, backlog=None)
    try:
        for failer in ("client", "server"):
            client, server = _agreed_pair(url, q, options, offer=False)
            a, b = (client, server) if failer == "client" else (server, client)
            try:
                a.send(b"before")
                with pytest.raises(SecretError), a:
                    raise SecretError("inner text")
                assert b.recv(timeout=5) == b"before"
                with pytest.raises(EndOfChannel):
                    b.recv(timeout=5)
            finally:
                a.close()
                b.close()
    finally:
        release_rendezvous(q, lock, q.name, options, unlink=True)
