"""A close reaches the peer even when the peer's queue is full and stays full until it reads:
after every message sent before it, the peer's receive raises EndOfChannel (it waited
forever before: Timeout after Timeout). Both APIs, both directions; a closer that exits at
once; both queues full; a channel without an end pipe."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack

import pytest
from tests._loops import AioRun
from tests._proc import child, wait_line
from tests.mq._pairs import afill, apair, fill, msg, pair

import ipcwire
from ipcwire._core.url import parse_url
from ipcwire.errors import ChannelBroken, ChannelClosed, ConnectionRefused, EndOfChannel
from ipcwire.mq._client import ClientSession
from ipcwire.mq._ends import end_pipe_path
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
from ipcwire.mq.blocking import MessageQueue, MqChannel
from ipcwire.options import ChannelOptions


def _read_to_the_end(ch: MqChannel, n: int, timeout: float = 5) -> None:
    """The ``n`` messages sent before the close, in order, then the end (and again)."""
    for i in range(n):
        assert ch.recv(timeout=timeout) == msg(i)
    for _ in range(2):
        with pytest.raises(EndOfChannel):
            ch.recv(timeout=timeout)


async def _aread_to_the_end(ch: AioMqChannel, n: int, timeout: float = 5) -> None:
    for i in range(n):
        assert await ch.recv(timeout=timeout) == msg(i)
    for _ in range(2):
        with pytest.raises(EndOfChannel):
            await ch.recv(timeout=timeout)


@pytest.mark.parametrize("timeout", [5, 0], ids=["recv-waits", "recv-nowait"])
@pytest.mark.parametrize("closer", ["client", "server"])
def test_blocking_close_with_the_peers_queue_full(
    mq_url: Callable[..., str], closer: str, timeout: float
) -> None:
    listener, client, server = pair(mq_url())
    a, b = (client, server) if closer == "client" else (server, client)
    try:
        n = fill(a)
        assert n > 0
        started = threading.Event()
        errors: list[BaseException] = []

        def blocked_send() -> None:
            started.set()
            try:
                a.send(msg(n))  # waits for room (or finds the channel closed)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=blocked_send, daemon=True)
        t.start()
        assert started.wait(10)
        a.close()
        t.join(10)
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], ChannelClosed), errors
        _read_to_the_end(b, n, timeout)
    finally:
        a.close()
        b.close()
        listener.close()


@pytest.mark.parametrize("timeout", [5, 0], ids=["recv-waits", "recv-nowait"])
@pytest.mark.parametrize("closer", ["client", "server"])
def test_asyncio_close_with_the_peers_queue_full(
    mq_url: Callable[..., str], aio_run: AioRun, closer: str, timeout: float
) -> None:
    async def main() -> None:
        listener, client, server = await apair(mq_url())
        a, b = (client, server) if closer == "client" else (server, client)
        try:
            n = await afill(a)
            assert n > 0
            started = asyncio.Event()

            async def blocked_send() -> None:
                started.set()
                await a.send(msg(n))

            task = asyncio.ensure_future(blocked_send())
            await started.wait()  # the task now waits for room
            await a.aclose()
            with pytest.raises(ChannelClosed):
                await asyncio.wait_for(task, 10)
            await _aread_to_the_end(b, n, timeout)
        finally:
            await a.aclose()
            await b.aclose()
            listener.close()

    aio_run(main())


def test_blocking_both_queues_full_a_waiting_send_learns_the_close(
    mq_url: Callable[..., str],
) -> None:
    """Both sides sent until both queues were full; one closes: the other's send, waiting
    for room nobody will make, ends at once (it waited until the closer's process exited)."""
    listener, a, b = pair(mq_url())
    try:
        n = fill(a)
        fill(b)
        errors: list[BaseException] = []

        def blocked_send() -> None:
            try:
                b.send(b"no room")
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=blocked_send, daemon=True)
        t.start()
        a.close()
        t.join(10)
        assert not t.is_alive(), "the send still waits after its peer closed"
        assert len(errors) == 1 and isinstance(errors[0], ChannelBroken), errors
        assert "the peer closed its end" in str(errors[0])
        _read_to_the_end(b, n)
    finally:
        a.close()
        b.close()
        listener.close()


def test_asyncio_both_queues_full_a_waiting_send_learns_the_close(
    mq_url: Callable[..., str], aio_run: AioRun
) -> None:
    async def main() -> None:
        listener, a, b = await apair(mq_url())
        try:
            n = await afill(a)
            await afill(b)
            started = asyncio.Event()

            async def blocked_send() -> None:
                started.set()
                await b.send(b"no room")

            task = asyncio.ensure_future(blocked_send())
            await started.wait()
            await a.aclose()
            with pytest.raises(ChannelBroken, match="the peer closed its end"):
                await asyncio.wait_for(task, 10)
            await _aread_to_the_end(b, n)
        finally:
            await a.aclose()
            await b.aclose()
            listener.close()

    aio_run(main())


_CHILD_BLOCKING = """
import sys, ipcwire
from ipcwire.errors import Timeout
url, role = sys.argv[1:]
if role == "listener":
    listener = ipcwire.listen(url)
    print("ready", flush=True)
    ch = listener.accept(timeout=20)
else:
    ch = ipcwire.connect(url, timeout=20)
n = 0
while True:
    try:
        ch.send(bytes([n % 256]) * 8000, timeout=0)
    except Timeout:
        break
    n += 1
print(n, ch._in.name, ch._out.name, flush=True)
ch.close()
if role == "listener":
    listener.close()
"""

_CHILD_ASYNCIO = """
import asyncio, sys, ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout
url, role = sys.argv[1:]


async def main():
    if role == "listener":
        listener = await aio.listen(url)
        print("ready", flush=True)
        ch = await listener.accept(timeout=20)
    else:
        ch = await aio.connect(url, timeout=20)
    n = 0
    while True:
        try:
            await ch.send(bytes([n % 256]) * 8000, timeout=0)
        except Timeout:
            break
        n += 1
    print(n, ch._in.name, ch._out.name, flush=True)
    await ch.aclose()
    if role == "listener":
        listener.close()


asyncio.run(main())
"""


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
@pytest.mark.parametrize("closer", ["client", "server"])
def test_a_process_that_closes_and_exits_at_once_ends_the_channel(
    mq_url: Callable[..., str], api: str, closer: str
) -> None:
    """The closer fills the peer's queue, closes and exits: the peer reads what it sent,
    then EndOfChannel (ChannelBroken, 'exited without closing it', before), and nothing of
    the channel is left behind."""
    url = mq_url()
    code = f"import sys\nsys.argv[1:] = {[url, 'listener' if closer == 'server' else 'client']}\n"
    code += _CHILD_BLOCKING if api == "blocking" else _CHILD_ASYNCIO
    with ExitStack() as stack:
        if closer == "client":  # listening before the child connects
            listener = stack.enter_context(ipcwire.listen(url))
            proc = stack.enter_context(child(code))
            ch = listener.accept(timeout=20)
        else:
            proc = stack.enter_context(child(code))
            assert wait_line(proc) == "ready"
            ch = ipcwire.connect(url, timeout=20)
        assert isinstance(ch, MqChannel)
        try:
            n, *names = wait_line(proc).split()
            assert proc.wait(timeout=20) == 0  # closed and gone
            _read_to_the_end(ch, int(n))
        finally:
            ch.close()
    for name in names:  # the channel's queues are gone, and its end pipe
        with pytest.raises(ConnectionRefused):
            MessageQueue.open(name)
    up = names[1] if closer == "client" else names[0]
    assert not os.path.lexists(end_pipe_path(up))


@pytest.mark.parametrize("instead", ["nothing", "a regular file"])
def test_without_an_end_pipe_the_marker_still_ends_the_channel(
    mq_url: Callable[..., str], instead: str
) -> None:
    """A listener that cannot open the client's end pipe (gone, or not a FIFO) says so in its
    handshake reply: both ends go without one, and a close is the marker as before."""
    url = mq_url()
    endpoint = parse_url(url)
    options = ChannelOptions.build(endpoint, {})
    q, lock = bind_listener(endpoint, {}, mode=0o600, backlog=None)
    try:
        session = ClientSession(q.name, options, maxmsg=None, msgsize=None, mode=0o600)
        accepted: list[ServerSession] = []
        try:
            path = end_pipe_path(session.up.name)
            os.unlink(path)
            if instead == "a regular file":
                with open(path, "w"):
                    pass
            assert q.try_send(session.hello(), 0)
            accepted += announced(q, options, Deferred())
            [s] = accepted
            assert s.done and s.ends is None
            assert not os.path.lexists(path)  # a file there is removed all the same
            welcome = session.dn.try_recv()
            assert welcome is not None and session.feed(*welcome)
            pidfd = session.finish()
            assert session.ends is None  # closed: the listener does not hold one
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
        )
        server = MqChannel(
            s.up, s.dn, channel_wire(options, s.hs), url, peer_pid=s.pid, pidfd=s.pidfd, ends=None
        )
        try:
            client.send(b"last")
            client.close()
            assert server.recv(timeout=5) == b"last"
            with pytest.raises(EndOfChannel):
                server.recv(timeout=5)
        finally:
            client.close()
            server.close()
    finally:
        release_rendezvous(q, lock, q.name, options, unlink=True)
