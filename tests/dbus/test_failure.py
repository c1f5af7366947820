"""A D-Bus channel ended by a failure is told from a clean close (docs/mechanisms/dbus.md,
"Finished, or failed?"): a ``with`` block or ``serve()`` handler left by an exception ends
the channel with ``Fail`` instead of ``Close``, behind every message already sent, and the
peer gets ``ChannelBroken`` naming the exception's type (never its text). An older ipcwire
peer (its handshake does not offer ``goodbye``) is played by hand on a bus connection of its
own: it never receives ``Fail``, and a clean close is ``Close`` as before."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from tests._loops import AioRun
from tests.dbus._fakes import FakeChannel, FakeHub

import ipcwire
from ipcwire import aio
from ipcwire._core.handshake import ServerHandshake
from ipcwire._core.url import parse_url
from ipcwire.channel import Channel
from ipcwire.dbus._conn import BusConnection
from ipcwire.dbus._proto import (
    INTERFACE,
    MAX_REASON,
    WINDOW_BYTES,
    bus_call,
    close_call,
    deliver_call,
    fail_call,
    failure_reason,
    handshake_call,
    handshake_text,
    parse_target,
    peers_left_rule,
    request_name,
)
from ipcwire.dbus.aio import AioDbusChannel
from ipcwire.dbus.blocking import DbusChannel
from ipcwire.errors import ChannelBroken, EndOfChannel, Timeout
from ipcwire.options import ChannelOptions

Url = Callable[[], str]
WAIT = 10.0


# -- serve() handlers ------------------------------------------------------------------------
def test_a_serve_handler_that_raises_is_not_a_clean_end(dbus_url: Url) -> None:
    def handler(ch: Channel) -> None:
        msg = ch.recv(timeout=WAIT)
        ch.send(msg)
        if msg == b"fail":
            raise ZeroDivisionError("inner detail")

    with ipcwire.listen(dbus_url()) as lst:
        t = threading.Thread(target=lst.serve, args=(handler,), daemon=True)
        t.start()
        for msg, want in ((b"ok", EndOfChannel), (b"fail", ChannelBroken)):
            with ipcwire.connect(lst.url, timeout=WAIT) as ch:
                assert ch.request(msg, timeout=WAIT) == msg
                with pytest.raises(want) as info:
                    ch.recv(timeout=WAIT)
            if want is ChannelBroken:
                text = str(info.value)
                assert "ended the channel after an error on its side" in text
                assert "ZeroDivisionError raised" in text and "inner detail" not in text
        lst.close()
        t.join(WAIT)
        assert not t.is_alive()


def test_an_asyncio_serve_handler_that_raises_is_not_a_clean_end(
    dbus_url: Url, aio_run: AioRun
) -> None:
    async def handler(ch: aio.AioChannel) -> None:
        msg = await ch.recv(timeout=WAIT)
        await ch.send(msg)
        if msg == b"fail":
            raise LookupError("inner detail")

    async def main() -> None:
        async with await aio.listen(dbus_url()) as lst:
            task = asyncio.ensure_future(lst.serve(handler))
            for msg, want in ((b"ok", EndOfChannel), (b"fail", ChannelBroken)):
                async with await aio.connect(lst.url, timeout=WAIT) as ch:
                    assert await ch.request(msg, timeout=WAIT) == msg
                    with pytest.raises(want) as info:
                        await ch.recv(timeout=WAIT)
                if want is ChannelBroken:
                    text = str(info.value)
                    assert "LookupError raised" in text and "inner detail" not in text
            await lst.aclose()
            await asyncio.wait_for(task, WAIT)

    aio_run(main())


# -- a full window ---------------------------------------------------------------------------
QUARTER = WINDOW_BYTES // 4  # four such messages fill a channel's window


def _numbered(i: int) -> bytes:
    return i.to_bytes(4, "big") * (QUARTER // 4)


@pytest.mark.parametrize("direction", ["client to server", "server to client"])
def test_fail_waits_behind_a_full_window(dbus_url: Url, direction: str) -> None:
    """The reader has not taken anything: the window is full (a send times out, nothing
    sent). The with block raises: close() returns, and the reader still gets every message,
    then ChannelBroken, not a clean end."""
    with ipcwire.listen(dbus_url()) as lst:
        client = ipcwire.connect(lst.url, timeout=WAIT)
        server = lst.accept(timeout=WAIT)
        a, b = (client, server) if direction == "client to server" else (server, client)
        with pytest.raises(RuntimeError), a:
            for i in range(4):
                a.send(_numbered(i), timeout=WAIT)
            with pytest.raises(Timeout, match="nothing was sent"):
                a.send(_numbered(4), timeout=0.2)
            raise RuntimeError("inner detail")
        assert a.closed
        for i in range(4):
            assert b.recv(timeout=WAIT) == _numbered(i)
        with pytest.raises(ChannelBroken, match="RuntimeError raised") as info:
            b.recv(timeout=WAIT)
        assert "inner detail" not in str(info.value)
        with pytest.raises(ChannelBroken, match="after an error on its side"):
            b.send(b"too late", timeout=WAIT)
        b.close()


@pytest.mark.parametrize("direction", ["client to server", "server to client"])
def test_asyncio_fail_waits_behind_a_full_window(
    dbus_url: Url, direction: str, aio_run: AioRun
) -> None:
    async def main() -> None:
        async with await aio.listen(dbus_url()) as lst:
            client = await aio.connect(lst.url, timeout=WAIT)
            server = await lst.accept(timeout=WAIT)
            a, b = (client, server) if direction == "client to server" else (server, client)
            with pytest.raises(RuntimeError):
                async with a:
                    for i in range(4):
                        await a.send(_numbered(i), timeout=WAIT)
                    with pytest.raises(Timeout, match="nothing was sent"):
                        await a.send(_numbered(4), timeout=0.2)
                    raise RuntimeError("inner detail")
            for i in range(4):
                assert await b.recv(timeout=WAIT) == _numbered(i)
            with pytest.raises(ChannelBroken, match="RuntimeError raised"):
                await b.recv(timeout=WAIT)
            await b.aclose()

    aio_run(main())


# -- an older ipcwire peer, by hand ----------------------------------------------------------
class _OldPeer:
    """The previous version's side of a channel on a bus connection of its own: its handshake
    does not offer ``goodbye`` and it knows no ``Fail``. It acknowledges every ``Deliver`` and
    records, in order, the ipcwire calls it gets and the connections that leave the bus."""

    def __init__(self, address: str) -> None:
        self.conn = BusConnection(address)
        self.seen: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.options = ChannelOptions.build(parse_url("dbus://session/io.ipcwire.Old"), {})
        self.conn.add_handler(self._handle)

    def _handle(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and not msg.body[2]:
                self.seen.put(("left", msg.body[0]))
            return
        if msg.message_type is not MessageType.METHOD_CALL or msg.interface != INTERFACE:
            return
        if msg.member == "Handshake":  # as a listener: one step, no token
            hs = ServerHandshake(codec="bytes", framing="length", max_frame=1 << 20, token=None)
            step = hs.receive(msg.body[1].encode())
            answer = handshake_text(step.send)
            self.seen.put(("Handshake", msg.body[1], answer))
            self.conn.send(Message.new_method_return(msg, "ss", ["c1", answer]))
        elif msg.member == "Deliver":
            self.conn.send(Message.new_method_return(msg))
            self.seen.put(("Deliver", bytes(msg.body[1])))
        else:
            self.seen.put((msg.member, *msg.body[1:]))

    def next(self, leaving: str = "") -> tuple[Any, ...]:
        """The next thing seen, skipping connections other than ``leaving`` that leave the
        bus (those of earlier tests may)."""
        while True:
            seen = self.seen.get(timeout=WAIT)
            if seen[0] != "left" or seen[1] == leaving:
                return seen

    def connect(self, url: str) -> tuple[str, str]:
        """Open a channel to ``url``'s listener as the previous version did: the listener's
        name and the channel's."""
        target = parse_target(parse_url(url))
        owner: str = self.conn.call(bus_call("GetNameOwner", "s", [target.name])).body[0]
        hs = self.options.client_handshake("length")  # no goodbye: the previous version's
        call = handshake_call(owner, target.path, "", handshake_text(hs.hello()))
        chan, answer = self.conn.call(call).body
        assert hs.receive(answer.encode()).done
        assert "goodbye" not in answer  # nobody offered it
        return owner, chan

    def close(self) -> None:
        self.conn.close()


@pytest.mark.parametrize("fail", [False, True])
def test_an_older_client_gets_close_as_before(dbus_url: Url, dbus_session: str, fail: bool) -> None:
    """A listener's channel to a client that does not take Fail: Close after the messages,
    failed or not (that client ends as it always did)."""
    old = _OldPeer(dbus_session)
    try:
        with ipcwire.listen(dbus_url()) as lst:
            old.connect(lst.url)
            server = lst.accept(timeout=WAIT)
            with pytest.raises(ValueError) if fail else _no_error(), server:
                server.send(b"before", timeout=WAIT)
                if fail:
                    raise ValueError("inner detail")
            assert old.next() == ("Deliver", b"before")
            assert old.next() == ("Close",)
    finally:
        old.close()


@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
@pytest.mark.parametrize("fail", [False, True])
def test_an_older_listener_sees_a_failed_client_leave(
    dbus_url: Url, dbus_session: str, driver: str, fail: bool
) -> None:
    """A client whose listener does not take Fail: after an error it sends no Close, and its
    connection leaving the bus is what that listener sees (ChannelBroken there, 'left the bus
    without closing'); a clean close is Close, as before."""
    old = _OldPeer(dbus_session)
    url = dbus_url()
    try:
        old.conn.call(request_name(url.split("/")[3]))
        old.conn.add_match(peers_left_rule())
        name = _fail_or_close_client(url, driver, fail)
        handshake = old.next(name)
        assert handshake[0] == "Handshake" and '"goodbye":1' in handshake[1]  # offered
        assert "goodbye" not in handshake[2]  # and not taken
        assert old.next(name) == ("Deliver", b"before")
        if not fail:
            assert old.next(name) == ("Close",)
        assert old.next(name) == ("left", name)  # nothing else in between
    finally:
        old.close()


def _fail_or_close_client(url: str, driver: str, fail: bool) -> str:
    """Connect, send b"before", end the with block (by an exception when ``fail``); the
    client's unique connection name."""
    if driver == "blocking":
        ch = ipcwire.connect(url, timeout=WAIT)
        assert isinstance(ch, DbusChannel)
        name = ch._conn.unique_name
        with pytest.raises(ValueError) if fail else _no_error(), ch:
            ch.send(b"before", timeout=WAIT)
            if fail:
                raise ValueError("inner detail")
        return str(name)

    async def main() -> str:
        ch = await aio.connect(url, timeout=WAIT)
        assert isinstance(ch, AioDbusChannel)
        name = ch._hub.bus.unique_name
        with pytest.raises(ValueError) if fail else _no_error():
            async with ch:
                await ch.send(b"before", timeout=WAIT)
                if fail:
                    raise ValueError("inner detail")
        return str(name)

    return asyncio.run(main())


class _no_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- what a peer's Fail may carry ------------------------------------------------------------
def test_the_reason_from_a_peer_is_bounded_and_readable(dbus_url: Url, dbus_session: str) -> None:
    old = _OldPeer(dbus_session)  # any connection may send a Fail: its text is untrusted
    try:
        with ipcwire.listen(dbus_url()) as lst:
            owner, chan = old.connect(lst.url)
            server = lst.accept(timeout=WAIT)
            path = parse_target(parse_url(lst.url)).path
            old.conn.send(deliver_call(owner, path, chan, b"before"))
            old.conn.send(fail_call(owner, path, chan, "\x1b[2J\n" + "é" * 3000))
            assert server.recv(timeout=WAIT) == b"before"
            with pytest.raises(ChannelBroken) as info:
                server.recv(timeout=WAIT)
            text = str(info.value)
            assert text.startswith(f"the client of {lst.url} ended the channel after an error")
            assert "\x1b" not in text and "\n" not in text and "?[2J?" in text
            reason = text.split("its side (", 1)[1].split("); every message", 1)[0]
            assert len(reason.encode()) <= MAX_REASON + 2  # a cut character: one U+FFFD
            server.close()
    finally:
        old.close()


def test_the_reason_sent_is_the_type_only_and_bounded() -> None:
    assert failure_reason(None) == ""
    assert failure_reason(EndOfChannel("the peer ended first")) == ""
    assert failure_reason(KeyError("secret")) == "KeyError raised while the channel was open"
    long = type("É" * 2000, (Exception,), {})
    sent = failure_reason(long("secret"))
    assert len(sent.encode()) <= MAX_REASON and sent.startswith("ÉÉ")


# -- the end a channel sends, and a Fail that beats the channel's setup (no bus) -------------
URL = "dbus://session/org.example.App"
PEER = ":1.5"


def _channel(hub: FakeHub, *, fails: bool) -> FakeChannel:
    wire = ChannelOptions.build(parse_url(URL), {}).wire()
    return FakeChannel(hub, PEER, "/org/example/App", "c1", wire, URL, fails=fails)


@pytest.mark.parametrize(
    ("client", "fails", "failed", "sent"),
    [
        (True, True, False, ["Close"]),
        (False, True, False, ["Close"]),
        (True, False, False, ["Close"]),
        (False, False, False, ["Close"]),
        (True, True, True, ["Fail"]),
        (False, True, True, ["Fail"]),
        (True, False, True, []),  # an older listener: the client's connection leaving says it
        (False, False, True, ["Close"]),  # an older client: as before
    ],
)
def test_which_end_a_channel_sends(
    client: bool, fails: bool, failed: bool, sent: list[str]
) -> None:
    hub = FakeHub(client=client)
    ch = _channel(hub, fails=fails)
    hub.register(ch)
    ch._failing(OSError("secret") if failed else None)
    ch._say_closed(ch._shut())
    assert [m.member for m in hub.sent] == sent
    if sent == ["Fail"]:
        assert hub.sent[0].body == ["c1", "OSError raised while the channel was open"]
        assert hub.sent[0].flags == close_call(PEER, "/p", "c1").flags  # no reply, like Close


def test_a_fail_that_arrives_before_the_client_channel_is_held() -> None:
    hub = FakeHub(client=True)
    first = deliver_call(":1.1", "/p", "c1", b"first")
    fail = fail_call(":1.1", "/p", "c1", "ValueError raised while the channel was open")
    for serial, msg in enumerate((first, fail), 1):
        msg.sender, msg.serial = PEER, serial
        assert hub.route(msg) is True
    assert hub.sent == []  # held, not refused
    ch = _channel(hub, fails=True)
    hub.register(ch)
    assert ch._next() is first
    with pytest.raises(ChannelBroken, match=r"^dbus://\S+ ended the channel after an error"):
        ch._next()
    with pytest.raises(ChannelBroken, match="after an error on its side"):
        ch._may_send(1)
