"""Bad input to the D-Bus mechanism is a typed error naming the endpoint and the fix, in both
drivers: bus names and object paths outside what D-Bus allows (ASCII), malformed bus
addresses, topics that are not D-Bus text (or hold a quote), and a name's owner that answers
or signals with other arguments than ipcwire's. And an asyncio channel, listener or
subscription closed from another thread is closed in its loop, waking what waits there."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from dbus_fast import Message, MessageType

import ipcwire
from ipcwire import aio
from ipcwire.dbus import aio as dbus_aio
from ipcwire.dbus import blocking
from ipcwire.dbus._conn import BusConnection
from ipcwire.dbus._proto import INTERFACE, request_name
from ipcwire.errors import ChannelClosed, ConfigurationError, InvalidURL, RemoteProtocolError

DRIVERS = ["blocking", "asyncio"]


def _opens(driver: str, url: str, **kw: Any) -> list[BaseException]:
    """What listen, connect and subscribe raise for ``url`` (each must raise)."""
    errors: list[BaseException] = []
    if driver == "blocking":
        opens: list[Callable[[], Any]] = [
            lambda: ipcwire.listen(url, **kw),
            lambda: ipcwire.connect(url, timeout=5, **kw),
            lambda: blocking.subscribe(url, timeout=5, **kw),
        ]
        for open_ in opens:
            with pytest.raises(Exception) as err:
                open_().close()
            errors.append(err.value)
        return errors

    async def main() -> None:
        for coro in (
            lambda: aio.listen(url, **kw),
            lambda: aio.connect(url, timeout=5, **kw),
            lambda: dbus_aio.subscribe(url, timeout=5, **kw),
        ):
            with pytest.raises(Exception) as err:
                await (await coro()).aclose()
            errors.append(err.value)

    asyncio.run(main())
    return errors


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "url", ["dbus://session/org.ex\u00e4mple.App", "dbus://session/org.example.App/\u00e4/b"]
)
def test_a_name_or_path_outside_ascii_is_an_invalid_url(
    driver: str, url: str, dbus_session: str
) -> None:
    """str.isalnum() took "ä": listen raised the daemon's InvalidArgs (a DbusError) for the
    name, connect said nothing was listening; a path was taken by listen (every client then
    failed) and connect raised dbus-fast's InvalidObjectPathError."""
    for err in _opens(driver, url):
        assert isinstance(err, InvalidURL), repr(err)
        assert "ASCII" in str(err) and url in str(err)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "address", ["garbage", "unix:nopath=1", "tcp:host=127.0.0.1,port=abc", 123]
)
def test_a_malformed_bus_address_is_a_configuration_error(
    driver: str, address: object, dbus_url: Callable[[], str]
) -> None:
    """The blocking driver raised dbus-fast's InvalidAddressError (no endpoint) for "garbage",
    the asyncio one MechanismUnavailable asking whether the daemon runs; address=123 was
    ignored for the environment's bus."""
    url = dbus_url()
    for err in _opens(driver, url, address=address):
        assert isinstance(err, ConfigurationError), repr(err)
        assert url in str(err) and "unix:path=" in str(err)


def test_a_malformed_address_in_the_environment_is_a_configuration_error(
    dbus_url: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = dbus_url()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "/run/user/1000/bus")  # a path, not an address
    for driver in DRIVERS:
        for err in _opens(driver, url):
            assert isinstance(err, ConfigurationError), repr(err)
            assert "from the environment" in str(err) and url in str(err)


BAD_TOPICS: list[object] = [5, "a\0b", "\udc80"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_topic_that_is_not_dbus_text_is_a_configuration_error(
    driver: str, dbus_url: Callable[[], str]
) -> None:
    """publish raised AttributeError, dbus-fast's InvalidMessageError or UnicodeEncodeError;
    subscribe, the daemon's MatchRuleInvalid (a DbusError) for a topic too long."""
    url = dbus_url()
    if driver == "blocking":
        with ipcwire.listen(url) as lst:
            assert isinstance(lst, blocking.DbusListener)
            for topic in BAD_TOPICS:
                with pytest.raises(ConfigurationError, match="topic") as err:
                    lst.publish(b"x", topic=topic)  # type: ignore[arg-type]
                assert err.value.endpoint == url
            for topic in ["a\0b", "x" * 2000]:
                with pytest.raises(ConfigurationError, match="topic"):
                    blocking.subscribe(url, topic=topic, timeout=5).close()
            lst.publish(b"x", topic="fine")
        return

    async def main() -> None:
        async with await aio.listen(url) as lst:
            assert isinstance(lst, dbus_aio.AioDbusListener)
            for topic in BAD_TOPICS:
                with pytest.raises(ConfigurationError, match="topic") as err:
                    await lst.publish(b"x", topic=topic)  # type: ignore[arg-type]
                assert err.value.endpoint == url
            for topic in ["a\0b", "x" * 2000]:
                with pytest.raises(ConfigurationError, match="topic"):
                    await (await dbus_aio.subscribe(url, topic=topic, timeout=5)).aclose()
            await lst.publish(b"x", topic="fine")

    asyncio.run(main())


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_topic_with_a_quote_subscribes_to_that_topic(
    driver: str, dbus_url: Callable[[], str]
) -> None:
    """The ' ended the match rule's quotes: subscribe raised the daemon's MatchRuleInvalid."""
    url = dbus_url()
    if driver == "blocking":
        with ipcwire.listen(url) as lst, blocking.subscribe(url, topic="it's", timeout=5) as sub:
            assert isinstance(lst, blocking.DbusListener)
            lst.publish(b"no", topic="its")
            lst.publish(b"yes", topic="it's")
            assert sub.recv_event(timeout=10) == ("it's", b"yes")
        return

    async def main() -> None:
        async with (
            await aio.listen(url) as lst,
            await dbus_aio.subscribe(url, topic="it's", timeout=5) as sub,
        ):
            assert isinstance(lst, dbus_aio.AioDbusListener)
            await lst.publish(b"no", topic="its")
            await lst.publish(b"yes", topic="it's")
            assert await sub.recv_event(timeout=10) == ("it's", b"yes")

    asyncio.run(main())


@contextmanager
def _foreign_owner(address: str, name: str) -> Iterator[BusConnection]:
    """A connection owning ``name`` that is not an ipcwire listener: it answers Handshake
    with one string (not ``ss``)."""
    conn = BusConnection(address, timeout=10)

    def handle(msg: Message) -> None:
        if msg.message_type is MessageType.METHOD_CALL and msg.member == "Handshake":
            conn.send(Message.new_method_return(msg, "s", ["what?"]))

    conn.add_handler(handle)
    try:
        conn.call(request_name(name))
        yield conn
    finally:
        conn.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_owner_answering_handshake_with_other_arguments_is_not_an_ipcwire_listener(
    driver: str, dbus_session: str, dbus_url: Callable[[], str]
) -> None:
    """connect raised ValueError (not enough values to unpack) in both drivers."""
    url = dbus_url()
    with _foreign_owner(dbus_session, url.split("/")[3]):
        if driver == "blocking":
            with pytest.raises(RemoteProtocolError, match="not an ipcwire listener") as err:
                ipcwire.connect(url, timeout=10).close()
        else:

            async def main() -> pytest.ExceptionInfo[RemoteProtocolError]:
                with pytest.raises(RemoteProtocolError, match="not an ipcwire listener") as e:
                    await (await aio.connect(url, timeout=10)).aclose()
                return e

            err = asyncio.run(main())
    assert err.value.endpoint == url


@pytest.mark.parametrize("driver", DRIVERS)
def test_events_with_other_arguments_are_ignored(
    driver: str, dbus_session: str, dbus_url: Callable[[], str]
) -> None:
    """An Event of (ss) reached recv_event() as TypeError (memoryview of a str), and (s) or ()
    logged an IndexError traceback from the reader."""
    url = dbus_url()
    path = "/io/ipcwire/Test"
    bad = [("ss", ["t", "a str, not bytes"]), ("s", ["t"]), ("", [])]
    with _foreign_owner(dbus_session, url.split("/")[3]) as owner:

        def emit() -> None:
            for signature, body in bad:
                owner.send(Message.new_signal(path, INTERFACE, "Event", signature, body))
            owner.send(Message.new_signal(path, INTERFACE, "Event", "say", ["t", b"good"]))

        if driver == "blocking":
            with blocking.subscribe(url, timeout=10) as sub:
                emit()
                assert sub.recv_event(timeout=10) == ("t", b"good")
        else:

            async def main() -> None:
                async with await dbus_aio.subscribe(url, timeout=10) as sub:
                    emit()
                    assert await sub.recv_event(timeout=10) == ("t", b"good")

            asyncio.run(main())


def test_asyncio_close_from_another_thread_wakes_what_waits(dbus_url: Callable[[], str]) -> None:
    """close() from a thread of its own (a worker, a GUI thread) while the loop waits in
    recv(), accept() and recv_event(): each ends with ChannelClosed at once. Before, the
    channel's close raised RuntimeError ('no running event loop') in that thread, left its
    bus connection open, and recv() slept on until its timeout."""
    url = dbus_url()

    async def main() -> None:
        asyncio.get_running_loop().set_debug(True)  # a loop object touched off its thread raises
        lst = await aio.listen(url)
        assert isinstance(lst, dbus_aio.AioDbusListener)
        ch = await aio.connect(url, timeout=10)
        server = await lst.accept(timeout=10)
        sub = await dbus_aio.subscribe(url, timeout=10)
        waits = [
            asyncio.ensure_future(ch.recv(timeout=60)),
            asyncio.ensure_future(lst.accept(timeout=60)),
            asyncio.ensure_future(sub.recv_event(timeout=60)),
        ]
        for _ in range(1000):  # bounded: until recv() and recv_event() wait
            if ch._waiter is not None and sub._waiter is not None:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0)
        assert ch._waiter is not None and sub._waiter is not None  # type: ignore[attr-defined]
        errors: list[BaseException] = []

        def close_all() -> None:
            for closable in (ch, lst, sub):
                try:
                    closable.close()
                except BaseException as exc:
                    errors.append(exc)

        t = threading.Thread(target=close_all)
        start = time.monotonic()
        t.start()
        await asyncio.to_thread(t.join, 10)
        assert errors == []
        done, _ = await asyncio.wait(waits, timeout=10)
        assert len(done) == 3, "a wait was not woken by close()"
        for w in waits:
            assert isinstance(w.exception(), ChannelClosed), repr(w.exception())
        assert time.monotonic() - start < 10
        assert ch.closed and lst.closed and sub.closed
        # the channel's close reached the listener's side: its peer ended the channel
        with pytest.raises(Exception) as end:
            await server.recv(timeout=10)
        assert type(end.value).__name__ == "EndOfChannel"
        await server.aclose()
        for closable in (ch, lst, sub):
            await closable.aclose()

    asyncio.run(main())
