"""``close()`` from another thread (or task) ends a ``send()`` blocked on a peer that does not
read, at once, with ``ChannelClosed``, and the peer never gets part of a message.

Before: the blocking driver's send waited for the socket in ``poll()``; ``close()`` ran the
closing handshake behind it (its close frame could not go out), then closed the socket's
descriptor, which does not wake a ``poll()`` on it (and keeps the connection open as long as
the poll lasts). The send went on waiting until its own timeout, the writer thread for ever,
and the peer never saw the end. A send waiting for room in the queue waited the same way. The
asyncio driver's send, waiting for the transport to drain, ended only when ``aclose()`` gave
up the handshake (twice ``close_timeout``), and then returned as if its message had been
sent, though the connection was cut in the middle of it.

"Not reading" here is the application's: the peer's side reads on its own until the
messages waiting for ``recv()`` hold over 4 MiB (``ipcwire.ws._queue``), so the senders send
1 MiB messages until it stops.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun
from tests.ws._tls import tls_contexts

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.errors import ChannelBroken, ChannelClosed, EndOfChannel, IpcwireError, Timeout
from ipcwire.ws._writer import HIGH_WATER

SMALL = [bytes([i]) * 1000 for i in range(1, 4)]  # go out whole before the sends that block
CLOSE_TIMEOUT = 10.0  # the closing handshake's bound: a prompt end is well under it
PROMPT = 2.0  # what "at once" is allowed on a busy machine


def _message(i: int) -> bytes:
    return bytes([i % 251]) * (1 << 20)


@contextmanager
def _pair(
    kind: str, tmp_path: Path, close_timeout: float = CLOSE_TIMEOUT
) -> Iterator[tuple[Channel, Channel]]:
    """(client, server side) over ``kind``, with keepalive off."""
    kw: dict[str, Any] = {"ping_interval": None, "close_timeout": close_timeout}
    server_kw: dict[str, Any] = {}
    client_kw: dict[str, Any] = {}
    if kind == "wss":
        server_kw["ssl"], client_kw["ssl"] = tls_contexts(tmp_path)
        url = "wss://127.0.0.1:0/x"
    elif kind == "ws+unix":
        url = f"ws+unix://{tmp_path}/ws.sock"
    else:
        url = "ws://127.0.0.1:0/x"
    with ipcwire.listen(url, **kw, **server_kw) as lst:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        client = ipcwire.connect(lst.url, timeout=10, **kw, **client_kw)
        t.join(10)
        with client, box[0] as server:
            yield client, server


class _Sender(threading.Thread):
    """Sends the small messages, then 1 MiB messages with ``timeout`` until ``more()`` says
    no (a ``Timeout`` waiting for room, which sent nothing, only means "try again"), then
    ``last()``; records which sends returned, how the thread ended and when."""

    def __init__(
        self,
        ch: Channel,
        *,
        timeout: float = 60,
        more: Callable[[], bool] = lambda: True,
        last: Callable[[Channel], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.ch = ch
        self.timeout = timeout
        self.more = more
        self.last = last
        self.sent: list[bytes] = []
        self.in_last = threading.Event()
        self.error: BaseException | None = None
        self.ended = 0.0

    def run(self) -> None:
        try:
            for m in SMALL:
                self.ch.send(m, timeout=30)
            while self.more():
                m = _message(len(self.sent))
                try:
                    self.ch.send(m, timeout=self.timeout)
                except Timeout:
                    continue
                self.sent.append(m)
            if self.last is not None:
                self.in_last.set()
                self.last(self.ch)
        except BaseException as exc:  # (the test looks at it)
            self.error = exc
        self.ended = time.monotonic()


def _until(cond: Callable[[], bool], what: str) -> None:
    """A bounded poll of a condition nothing can be waited on for (the kernel's, or a
    thread's)."""
    give_up = time.monotonic() + 30
    idle = threading.Event()
    while not cond():
        assert time.monotonic() < give_up, f"never {what}"
        idle.wait(0.005)


_FUTEX, _POLL = "202", "7"  # x86_64 system call numbers


def _in_syscall(thread: threading.Thread | None, number: str) -> bool:
    """``thread`` (of this process) is inside system call ``number``."""
    if thread is None or thread.native_id is None:
        return False
    try:
        with open(f"/proc/self/task/{thread.native_id}/syscall") as f:
            return f.read().split()[0] == number
    except FileNotFoundError:  # it ended
        return False


def _paused(ch: Channel) -> bool:
    """``ch``'s library stopped reading: its queue for ``recv()`` is full."""
    return bool(ch._conn.recv_messages.paused)  # type: ignore[attr-defined]


def _stuck(writer: Any, peer: Channel) -> bool:
    """Nothing more leaves ``writer``: the peer's library stopped reading, the socket has no
    room (the thread writing the queue waits for it in poll()), and over HIGH_WATER bytes are
    queued, so a send waits for room."""
    return _paused(peer) and writer.queued >= HIGH_WATER and _in_syscall(writer._flusher, _POLL)


def _drain_peer(peer: Channel, bound: float) -> tuple[list[bytes], IpcwireError]:
    """What the peer receives until the channel ends (never a Timeout: the end must come)."""
    got: list[bytes] = []
    while True:
        try:
            got.append(peer.recv(timeout=bound))
        except (ChannelBroken, EndOfChannel) as exc:
            return got, exc


def _whole_then_end(got: list[bytes], sender: _Sender, *, all_returned: bool) -> None:
    """The peer got the small messages and then 1 MiB messages in order, each whole (the
    ones whose send returned: all of them with ``all_returned``, else a prefix)."""
    assert got[: len(SMALL)] == SMALL
    rest = got[len(SMALL) :]
    assert all(len(m) == 1 << 20 for m in rest), "a message was cut short"
    if all_returned:
        assert rest == sender.sent
    else:
        assert rest == sender.sent[: len(rest)]


@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("kind", ["ws", "wss", "ws+unix"])
def test_close_ends_a_send_blocked_part_way_at_once(side: str, kind: str, tmp_path: Path) -> None:
    with _pair(kind, tmp_path) as (client, server):
        ch, peer = (client, server) if side == "client" else (server, client)
        sender = _Sender(ch)
        sender.start()
        writer = ch._writer  # type: ignore[attr-defined]
        # the peer's library stopped reading, the socket buffers are full, and the rest of a
        # message waits in the channel's queue: the send cannot end but by close()
        _until(lambda: not sender.is_alive() or (_paused(peer) and writer.queued > 0), "blocked")
        assert sender.is_alive(), sender.error
        began = time.monotonic()
        ch.close()
        closed = time.monotonic() - began
        sender.join(CLOSE_TIMEOUT + 5)
        assert not sender.is_alive(), "close() did not end the blocked send"
        assert isinstance(sender.error, ChannelClosed), repr(sender.error)
        assert sender.ended - began < PROMPT, f"the send ended {sender.ended - began:.2f} s after"
        assert closed < PROMPT, f"close() took {closed:.2f} s"
        got, end = _drain_peer(peer, CLOSE_TIMEOUT + PROMPT)
        _whole_then_end(got, sender, all_returned=True)  # and nothing of the one cut off
        assert isinstance(end, (ChannelBroken, EndOfChannel))


@pytest.mark.parametrize("side", ["client", "server"])
def test_close_ends_a_send_waiting_for_room_at_once(side: str, tmp_path: Path) -> None:
    """Sends whose time runs out while they write leave their message queued (a thread writes
    it); then a send waits for room. close() ends that wait at once, and the queue is given
    up after close_timeout: the connection ends, the peer sees it, no thread stays behind."""
    close_timeout = 1.0
    with _pair("ws", tmp_path, close_timeout) as (client, server):
        ch, peer = (client, server) if side == "client" else (server, client)
        writer = ch._writer  # type: ignore[attr-defined]
        sender = _Sender(
            ch,
            timeout=0.3,
            more=lambda: not _stuck(writer, peer),
            last=lambda c: c.send(b"never", timeout=60),
        )
        sender.start()
        assert sender.in_last.wait(60), sender.error
        _until(lambda: not sender.is_alive() or _in_syscall(sender, _FUTEX), "waiting")
        assert sender.is_alive(), sender.error
        began = time.monotonic()
        ch.close()
        closed = time.monotonic() - began
        sender.join(close_timeout + 5)
        assert not sender.is_alive(), "close() did not end the waiting send"
        assert isinstance(sender.error, ChannelClosed), repr(sender.error)
        assert sender.ended - began < PROMPT, f"the send ended {sender.ended - began:.2f} s after"
        assert closed < close_timeout + PROMPT, f"close() took {closed:.2f} s"
        got, end = _drain_peer(peer, close_timeout + PROMPT)
        _whole_then_end(got, sender, all_returned=False)  # the queued ones were given up
        assert isinstance(end, (ChannelBroken, EndOfChannel))
        # the thread that wrote the queue ended with the connection
        _until(lambda: writer._flusher is None, "the writer thread ended")


@pytest.mark.parametrize("attempt", range(5))
def test_a_send_racing_close_ends_at_once(attempt: int, tmp_path: Path) -> None:
    """close() while the sends are still going (not waiting for them to block): the sender
    ends at once, close() too, and the peer gets whole messages. The peer reads meanwhile:
    a peer whose queue is full (over 4 MiB: five of these messages) does not read the close
    frame either, and close() then waits for it up to close_timeout (as the tests above
    allow)."""
    with _pair("ws", tmp_path) as (client, server):
        drained: list[tuple[list[bytes], IpcwireError]] = []
        reader = threading.Thread(
            target=lambda: drained.append(_drain_peer(server, CLOSE_TIMEOUT + PROMPT)),
            daemon=True,
        )
        reader.start()
        sender = _Sender(client)
        sender.start()
        _until(lambda: len(sender.sent) > attempt or not sender.is_alive(), "sending")
        began = time.monotonic()
        client.close()
        closed = time.monotonic() - began
        sender.join(CLOSE_TIMEOUT + 5)
        assert not sender.is_alive()
        assert isinstance(sender.error, ChannelClosed), repr(sender.error)
        assert sender.ended - began < PROMPT
        assert closed < PROMPT
        reader.join(CLOSE_TIMEOUT + PROMPT + 5)
        assert drained, "the peer's recv() did not end with the channel"
        got, end = drained[0]
        _whole_then_end(got, sender, all_returned=False)
        assert isinstance(end, (ChannelBroken, EndOfChannel))


def test_without_close_a_send_waiting_for_room_still_times_out(tmp_path: Path) -> None:
    """(unchanged) A send waiting for room that nobody closes times out, nothing sent. (Its
    closes at the end wait for a closing handshake behind full buffers: bounded short.)"""
    with _pair("ws", tmp_path, close_timeout=0.5) as (client, server):
        writer = client._writer  # type: ignore[attr-defined]
        sender = _Sender(client, timeout=0.3, more=lambda: not _stuck(writer, server))
        sender.start()
        sender.join(60)
        assert not sender.is_alive() and sender.error is None
        # (the kernel may still find room for a message or two, by the time this runs: a
        # send that fits is not the point; the first that has to wait times out)
        with pytest.raises(Timeout, match="Nothing of this message was sent"):
            for i in range(20):
                client.send(_message(i), timeout=0.2)


# -- asyncio ----------------------------------------------------------------------------------
async def _aio_pair(close_timeout: float) -> tuple[Any, AioChannel, AioChannel]:
    lst = await aio.listen("ws://127.0.0.1:0/x", ping_interval=None, close_timeout=close_timeout)
    accepting = asyncio.ensure_future(lst.accept(timeout=10))
    client = await aio.connect(lst.url, timeout=10, ping_interval=None, close_timeout=close_timeout)
    return lst, client, await accepting


@pytest.mark.parametrize("side", ["client", "server"])
def test_aio_close_ends_a_send_waiting_for_the_transport_at_once(
    side: str, aio_run: AioRun
) -> None:
    """aclose() keeps its bounded closing handshake (the close frame waits behind what the
    transport holds, at most twice close_timeout); the send waiting for the transport to
    drain does not wait for it."""
    close_timeout = 0.75

    async def main() -> None:
        lst, client, server = await _aio_pair(close_timeout)
        ch, peer = (client, server) if side == "client" else (server, client)
        conn = ch._conn  # type: ignore[attr-defined]
        try:
            for m in SMALL:
                await ch.send(m, timeout=30)
            sent: list[bytes] = []
            ended: list[float] = []

            async def sender() -> None:
                try:
                    while True:
                        m = _message(len(sent))
                        await ch.send(m, timeout=60)
                        sent.append(m)
                finally:
                    ended.append(time.monotonic())

            sending = asyncio.ensure_future(sender())
            # the peer stops reading once its queue is full; then the transport fills up
            # and a send waits for it to drain
            give_up = time.monotonic() + 30
            while not (conn.paused and peer._conn.recv_messages.paused):  # type: ignore[attr-defined]
                assert not sending.done() and time.monotonic() < give_up
                await asyncio.sleep(0.005)
            began = time.monotonic()
            ch.close()
            done, _ = await asyncio.wait([sending], timeout=2 * close_timeout + 5)
            assert done, "close() did not end the send waiting for the transport"
            with pytest.raises(ChannelClosed):
                sending.result()
            assert ended[0] - began < PROMPT, f"the send ended {ended[0] - began:.2f} s after"
            await ch.aclose()
            assert time.monotonic() - began < 2 * close_timeout + PROMPT
            got: list[bytes] = []
            with pytest.raises((ChannelBroken, EndOfChannel)):
                while True:
                    got.append(await peer.recv(timeout=2 * close_timeout + PROMPT))
            # whole messages in order: what the transport held when the handshake gave up is
            # lost, the message of the send that raised may have gone out whole before
            assert got[: len(SMALL)] == SMALL
            rest = got[len(SMALL) :]
            assert rest == [*sent, _message(len(sent))][: len(rest)]
        finally:
            await client.aclose()
            await server.aclose()
            await lst.aclose()

    aio_run(main())
