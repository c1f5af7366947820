"""The asyncio D-Bus driver does what the blocking one does, against real daemons: a
subscription, channel or listener whose bus connection ends raises at once (the same words), a
subscription's statistics count what is buffered and its Timeout names the endpoint, a message
over the peer's max_frame is refused with the same words, an error reply of the bus is the
same exception, and so is a failed handshake."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message
from tests._proc import child, kill9, run_python, wait_line
from tests._threads import finished, in_thread

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.channel import Channel
from ipcwire.dbus import aio as dbus_aio
from ipcwire.dbus import blocking
from ipcwire.dbus._conn import BusConnection
from ipcwire.dbus._listener_state import CHANNELS_PER_PEER
from ipcwire.dbus._proto import (
    ERROR_REFUSED,
    MAX_MESSAGE,
    SUBSCRIPTION_BUFFER,
    WINDOW,
    ClientHandshakeCalls,
    DbusError,
    bus_call,
    deliver_call,
)
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ChannelClosed,
    FrameTooLarge,
    LocalProtocolError,
    PermissionDenied,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.options import ChannelOptions

DRIVERS = ["blocking", "asyncio"]
LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"


def _kill(daemon: subprocess.Popen[str]) -> None:
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait(20)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_subscription_whose_bus_died_raises(
    driver: str, killable_bus: tuple[str, subprocess.Popen[str]]
) -> None:
    address, daemon = killable_bus
    url = "dbus://session/io.ipcwire.Gone/io/ipcwire/Gone"
    if driver == "blocking":
        with blocking.subscribe(url, address=address, timeout=10) as sub:
            _kill(daemon)
            with pytest.raises(ChannelBroken) as err:
                sub.recv_event(timeout=30)  # raises when the connection ends, not at 30 s
    else:

        async def main() -> pytest.ExceptionInfo[ChannelBroken]:
            async with await dbus_aio.subscribe(url, address=address, timeout=10) as sub:
                _kill(daemon)
                with pytest.raises(ChannelBroken) as err:
                    await sub.recv_event(timeout=30)
                return err

        err = asyncio.run(main())
    assert err.value.endpoint == url
    assert "subscribe again" in str(err.value)


@pytest.mark.parametrize("driver", DRIVERS)
def test_channels_and_listener_whose_bus_died_raise(
    driver: str, killable_bus: tuple[str, subprocess.Popen[str]]
) -> None:
    address, daemon = killable_bus
    url = "dbus://session/io.ipcwire.Gone/io/ipcwire/Gone"
    errors: list[BaseException] = []
    if driver == "blocking":
        with (
            ipcwire.listen(url, address=address) as listener,
            ipcwire.connect(url, address=address, timeout=10) as c,
            listener.accept(timeout=10) as s,
        ):
            _kill(daemon)
            for wait in (c.recv, s.recv, listener.accept):
                with pytest.raises(ChannelBroken) as err:
                    wait(timeout=30)  # raises when the connection ends, not at 30 s
                errors.append(err.value)
    else:

        async def main() -> None:
            async with (
                await aio.listen(url, address=address) as listener,
                await aio.connect(url, address=address, timeout=10) as c,
                await listener.accept(timeout=10) as s,
            ):
                _kill(daemon)
                for wait in (c.recv, s.recv, listener.accept):
                    with pytest.raises(ChannelBroken) as err:
                        await wait(timeout=30)
                    errors.append(err.value)

        asyncio.run(main())
    for e in errors:
        assert isinstance(e, ChannelBroken) and e.endpoint == url
        assert str(e) == (
            f"{url}: the bus connection ended: the D-Bus daemon closed the connection (end of "
            f"stream). The D-Bus daemon stopped or dropped this connection: open the channel "
            f"(or listener) again once the bus is back"
        )


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_subscription_counts_what_it_buffered(driver: str, dbus_url: Callable[[], str]) -> None:
    url = dbus_url()
    if driver == "blocking":
        with (
            ipcwire.listen(url) as listener,
            blocking.subscribe(url, timeout=10) as sub,
        ):
            assert isinstance(listener, blocking.DbusListener)
            listener.publish(b"12345")
            listener.publish(b"123")
            # A round trip on each connection: the bus has routed both signals, and the
            # subscriber has read them before the answer.
            listener._conn.call(bus_call("GetId"))
            sub._conn.call(bus_call("GetId"))
            before = sub.statistics()
            sub.recv(timeout=10)
            after = sub.statistics()
    else:

        async def main() -> tuple[ipcwire.ChannelStatistics, ipcwire.ChannelStatistics]:
            async with (
                await aio.listen(url) as listener,
                await dbus_aio.subscribe(url, timeout=10) as sub,
            ):
                assert isinstance(listener, dbus_aio.AioDbusListener)
                await listener.publish(b"12345")
                await listener.publish(b"123")
                await listener._hub.bus.call(bus_call("GetId"))
                await sub._bus.call(bus_call("GetId"))
                before = sub.statistics()
                await sub.recv(timeout=10)
                return before, sub.statistics()

        before, after = asyncio.run(main())
    assert before.buffered_bytes == 8 and before.messages_received == 0
    assert after.buffered_bytes == 3 and after.messages_received == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_subscription_timeout_names_the_endpoint(
    driver: str, dbus_url: Callable[[], str]
) -> None:
    url = dbus_url()
    errors: list[Timeout] = []
    if driver == "blocking":
        with blocking.subscribe(url, timeout=10) as sub:
            for timeout in (0, 0.05):
                with pytest.raises(Timeout) as err:
                    sub.recv_event(timeout=timeout)
                errors.append(err.value)
    else:

        async def main() -> None:
            async with await dbus_aio.subscribe(url, timeout=10) as sub:
                for timeout in (0, 0.05):
                    with pytest.raises(Timeout) as err:
                        await sub.recv_event(timeout=timeout)
                    errors.append(err.value)

        asyncio.run(main())
    assert [e.endpoint for e in errors] == [url, url]
    assert [str(e) for e in errors] == [
        f"no event from {url} yet",
        f"no event from {url} within 0.05 s",
    ]


def test_too_large_for_the_peer_says_the_same_in_both_drivers(
    dbus_url: Callable[[], str],
) -> None:
    url = dbus_url()
    with ipcwire.listen(url, max_frame=100) as listener:
        with (
            ipcwire.connect(url, timeout=10) as ch,
            listener.accept(timeout=10),
            pytest.raises(FrameTooLarge) as blocking_err,
        ):
            ch.send(b"x" * 200)

        async def main() -> FrameTooLarge:
            async with await aio.connect(url, timeout=10) as ch:
                with pytest.raises(FrameTooLarge) as err:
                    await ch.send(b"x" * 200)
                return err.value

        aio_err = asyncio.run(main())
    for err in (blocking_err.value, aio_err):
        assert (err.size, err.limit, err.endpoint) == (200, 100, url)
        assert "use unix:// for large messages" in str(err)
    assert str(aio_err) == str(blocking_err.value)


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_error_reply_of_the_bus_is_a_dbus_error(
    driver: str, dbus_url: Callable[[], str], configured_bus: Callable[..., str]
) -> None:
    url = dbus_url()
    # a daemon allowing no match rule refuses the subscription's (a topic too long for a
    # rule, which provoked the refusal here before, is refused by subscribe itself now)
    address = configured_bus(settings='<limit name="max_match_rules_per_connection">0</limit>')
    if driver == "blocking":
        with pytest.raises(DbusError) as err:
            blocking.subscribe(url, address=address, timeout=10)
    else:

        async def main() -> pytest.ExceptionInfo[DbusError]:
            with pytest.raises(DbusError) as err:
                await dbus_aio.subscribe(url, address=address, timeout=10)
            return err

        err = asyncio.run(main())
    assert isinstance(err.value, ChannelBroken)
    assert err.value.name == LIMITS_EXCEEDED and err.value.endpoint == url
    assert str(err.value).startswith(
        "org.freedesktop.DBus answered AddMatch with " + LIMITS_EXCEEDED
    )


def _connect(driver: str, url: str, **kw: object) -> None:
    """Connect with ``driver`` (and close again)."""
    if driver == "blocking":
        ipcwire.connect(url, timeout=10, **kw).close()  # type: ignore[arg-type]
    else:

        async def main() -> None:
            await (await aio.connect(url, timeout=10, **kw)).aclose()  # type: ignore[arg-type]

        asyncio.run(main())


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_client_handshake_fails_the_same_way(
    driver: str, dbus_url: Callable[[], str], dbus_session: str
) -> None:
    url = dbus_url()
    with ipcwire.listen(url, token="right"), pytest.raises(AuthenticationFailed):
        _connect(driver, url, token="wrong")
    url = dbus_url()
    conn = BusConnection(dbus_session)

    def refuse(msg: Message) -> None:  # a service that knows no ipcwire
        conn.send(Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "no"))

    conn.add_handler(refuse)
    try:
        conn.call(bus_call("RequestName", "su", [url.split("/")[3], 4]))
        with pytest.raises(RemoteProtocolError, match="not an ipcwire listener") as err:
            _connect(driver, url)
        assert err.value.endpoint == url
    finally:
        conn.close()


def test_two_tasks_receiving_from_an_asyncio_subscription(dbus_url: Callable[[], str]) -> None:
    url = dbus_url()

    async def main() -> None:
        sub = await dbus_aio.subscribe(url, timeout=10)
        first = asyncio.create_task(sub.recv_event())
        await asyncio.sleep(0)  # one loop turn: the task runs until it waits
        assert sub._waiter is not None
        with pytest.raises(LocalProtocolError, match="receive from one task"):
            await sub.recv_event(timeout=5)
        sub.close()
        with pytest.raises(ChannelClosed):
            await first

    asyncio.run(main())


def _open(driver: str, url: str, address: str) -> None:
    """Connect to ``url`` on the bus at ``address`` with ``driver``, timeout 0.5 s."""
    if driver == "blocking":
        ipcwire.connect(url, address=address, timeout=0.5).close()
    else:

        async def main() -> None:
            await (await aio.connect(url, address=address, timeout=0.5)).aclose()

        asyncio.run(main())


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_daemon_that_does_not_answer_is_mechanism_unavailable(
    driver: str, killable_bus: tuple[str, subprocess.Popen[str]]
) -> None:
    """A stopped daemon accepts the connection (the kernel does) but never authenticates it:
    the blocking driver raised the socket's bare TimeoutError('timed out')."""
    address, daemon = killable_bus
    url = "dbus://session/io.ipcwire.Stopped"
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        with pytest.raises(ipcwire.MechanismUnavailable) as err:
            _open(driver, url, address)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert str(err.value) == f"the D-Bus daemon at {address} did not answer within 0.5 s ({url})"


def test_a_daemon_that_never_says_hello_leaves_no_socket_or_thread(tmp_path: Path) -> None:
    """A daemon that authenticates and then answers nothing: the blocking driver raised
    ipcwire's Timeout and left its socket open and its reader thread running."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "bus"))
    server.listen(1)
    hung_up = threading.Event()

    def daemon() -> None:  # SASL "OK", then read until the client hangs up
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n" not in data and (chunk := conn.recv(4096)):
                data += chunk  # AUTH EXTERNAL <uid>
            conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
            while conn.recv(4096):  # BEGIN, then Hello: never answered
                pass
        hung_up.set()

    t = threading.Thread(target=daemon, daemon=True)
    t.start()
    readers = sum(th.name == "ipcwire dbus" for th in threading.enumerate())
    url = "dbus://session/io.ipcwire.Mute"
    address = f"unix:path={tmp_path / 'bus'}"
    try:
        with pytest.raises(ipcwire.MechanismUnavailable, match=r"did not answer within 0\.5 s"):
            _open("blocking", url, address)
        assert hung_up.wait(20), "the client's socket was left open"
        assert sum(th.name == "ipcwire dbus" for th in threading.enumerate()) == readers
    finally:
        server.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_bus_policy_saying_no_is_permission_denied(
    driver: str, configured_bus: Callable[..., str]
) -> None:
    """A name the policy lets nobody own was DbusError (a ChannelBroken); a name the policy
    lets nobody call was RemoteProtocolError, 'is not an ipcwire listener'."""
    address = configured_bus(
        '<deny own="io.ipcwire.NotYours"/><deny send_destination="io.ipcwire.Private"/>'
    )
    own, call = "dbus://session/io.ipcwire.NotYours", "dbus://session/io.ipcwire.Private"
    errors: list[PermissionDenied] = []
    with ipcwire.listen(call, address=address):
        if driver == "blocking":
            for attempt in (
                lambda: ipcwire.listen(own, address=address),
                lambda: ipcwire.connect(call, address=address, timeout=10),
            ):
                with pytest.raises(PermissionDenied) as err:
                    attempt()
                errors.append(err.value)
        else:

            async def main() -> None:
                for attempt in (
                    lambda: aio.listen(own, address=address),
                    lambda: aio.connect(call, address=address, timeout=10),
                ):
                    with pytest.raises(PermissionDenied) as err:
                        await attempt()
                    errors.append(err.value)

            asyncio.run(main())
    assert [e.endpoint for e in errors] == [own, call]
    assert '<allow own="io.ipcwire.NotYours"/>' in str(errors[0])
    assert '<allow send_destination="io.ipcwire.Private"/>' in str(errors[1])
    assert all("the session bus's policy does not allow" in str(e) for e in errors)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_burst_on_the_system_bus_keeps_under_its_limit_of_calls_awaiting_replies(
    driver: str, configured_bus: Callable[..., str]
) -> None:
    """The system bus lets a connection have at most 128 calls awaiting replies (its default
    max_replies_per_connection) and refuses the rest: with 1024 messages in flight, about
    half of a burst of 300 never arrived, and every send had returned without an error."""
    address = configured_bus(settings='<limit name="max_replies_per_connection">128</limit>')
    url = "dbus://system/io.ipcwire.Burst"
    sent = [b"%d" % i for i in range(300)]
    if driver == "blocking":
        with (
            ipcwire.listen(url, address=address) as listener,
            ipcwire.connect(url, address=address, timeout=10) as c,
            listener.accept(timeout=10) as s,
        ):
            t, box = in_thread(lambda: [c.send(m, timeout=10) for m in sent])
            got = [s.recv(timeout=10) for _ in sent]
            assert finished(t) and not isinstance(box[0], BaseException)
    else:

        async def main() -> list[bytes]:
            async with (
                await aio.listen(url, address=address) as listener,
                await aio.connect(url, address=address, timeout=10) as c,
                await listener.accept(timeout=10) as s,
            ):

                async def burst() -> None:
                    for m in sent:
                        await c.send(m, timeout=10)

                sender = asyncio.create_task(burst())
                got = [await s.recv(timeout=10) for _ in sent]
                await sender
                return got

        got = asyncio.run(main())
    assert got == sent


MALFORMED: list[tuple[str, str, list[Any]]] = [
    ("Deliver", "", []),
    ("Deliver", "ss", ["c1", "x"]),
    ("Handshake", "si", ["", 1]),
]


def _malformed_calls(address: str, name: str) -> list[str]:
    """Call ``name``'s ipcwire interface with the wrong arguments, as a foreign client might:
    the error names of the answers."""
    names = []
    conn = BusConnection(address)
    try:
        for member, signature, body in MALFORMED:
            call = Message(
                destination=name,
                path="/" + name.replace(".", "/"),
                interface="io.ipcwire.Channel1",
                member=member,
                signature=signature,
                body=body,
            )
            with pytest.raises(DbusError) as err:
                conn.call(call, timeout=10)
            names.append(err.value.name)
    finally:
        conn.close()
    return names


@pytest.mark.parametrize("driver", DRIVERS)
def test_calls_with_the_wrong_arguments_are_answered_and_the_listener_serves_on(
    driver: str, dbus_session: str, dbus_url: Callable[[], str]
) -> None:
    """The blocking listener answered nothing (the caller waited for its timeout) and the
    asyncio one dbus-fast's InternalError (IndexError...)."""
    url = dbus_url()
    name = url.split("/")[3]
    if driver == "blocking":
        with ipcwire.listen(url) as listener:
            names = _malformed_calls(dbus_session, name)
            with ipcwire.connect(url, timeout=10) as c, listener.accept(timeout=10) as s:
                c.send(b"still served")
                assert s.recv(timeout=10) == b"still served"
    else:

        async def main() -> list[str]:
            async with await aio.listen(url) as listener:
                names = await asyncio.to_thread(_malformed_calls, dbus_session, name)
                async with (
                    await aio.connect(url, timeout=10) as c,
                    await listener.accept(timeout=10) as s,
                ):
                    await c.send(b"still served")
                    assert await s.recv(timeout=10) == b"still served"
            return names

        names = asyncio.run(main())
    assert names == ["org.freedesktop.DBus.Error.InvalidArgs"] * len(MALFORMED)


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_event_too_large_for_a_bus_is_refused_by_publish(
    driver: str, dbus_url: Callable[[], str]
) -> None:
    """publish() had no limit: the system bus drops the connection (every channel of the
    listener) for a message over 32 MiB, and over 64 MiB dbus-fast raised its own
    InvalidMessageError."""
    url = dbus_url()
    big = b"x" * (MAX_MESSAGE + 1)
    if driver == "blocking":
        with ipcwire.listen(url) as listener:
            assert isinstance(listener, blocking.DbusListener)
            with pytest.raises(FrameTooLarge) as err:
                listener.publish(big)
    else:

        async def main() -> pytest.ExceptionInfo[FrameTooLarge]:
            async with await aio.listen(url) as listener:
                assert isinstance(listener, dbus_aio.AioDbusListener)
                with pytest.raises(FrameTooLarge) as err:
                    await listener.publish(big)
                return err

        err = asyncio.run(main())
    assert (err.value.size, err.value.limit, err.value.endpoint) == (len(big), MAX_MESSAGE, url)


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_event_over_the_subscribers_max_frame_is_frame_too_large_and_skipped(
    driver: str, dbus_url: Callable[[], str]
) -> None:
    """A subscription returned events whatever their size: its max_frame was not checked (a
    channel's recv checks it)."""
    url = dbus_url()
    small = url + "?max_frame=100"
    if driver == "blocking":
        with ipcwire.listen(url) as listener, blocking.subscribe(small, timeout=10) as sub:
            assert isinstance(listener, blocking.DbusListener)
            listener.publish(b"x" * 1000)
            listener.publish(b"fits")
            with pytest.raises(FrameTooLarge) as err:
                sub.recv(timeout=10)
            assert sub.recv(timeout=10) == b"fits"
    else:

        async def main() -> pytest.ExceptionInfo[FrameTooLarge]:
            async with (
                await aio.listen(url) as listener,
                await dbus_aio.subscribe(small, timeout=10) as sub,
            ):
                assert isinstance(listener, dbus_aio.AioDbusListener)
                await listener.publish(b"x" * 1000)
                await listener.publish(b"fits")
                with pytest.raises(FrameTooLarge) as err:
                    await sub.recv(timeout=10)
                assert await sub.recv(timeout=10) == b"fits"
                return err

        err = asyncio.run(main())
    assert (err.value.size, err.value.limit, err.value.endpoint) == (1000, 100, small)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_listener_notices_dead_clients_beyond_the_bus_limit_of_match_rules(
    driver: str, configured_bus: Callable[..., str]
) -> None:
    """A bus caps the match rules of a connection (512 on the system bus; 2 here), and the
    listener added one per client to learn when it leaves: the clients beyond the cap were
    never watched, so a server channel whose client was killed -9 waited for its timeout."""
    address = configured_bus(settings='<limit name="max_match_rules_per_connection">2</limit>')
    url = "dbus://session/io.ipcwire.Crowd"
    code = f"""
        import ipcwire, threading
        chans = [ipcwire.connect({url!r}, address={address!r}, timeout=10) for _ in range(3)]
        print("ready", flush=True)
        threading.Event().wait()
        """
    errors: list[BaseException] = []
    if driver == "blocking":
        with ipcwire.listen(url, address=address) as listener, child(code) as clients:
            assert wait_line(clients) == "ready"
            chans = [listener.accept(timeout=10) for _ in range(3)]
            kill9(clients)
            for ch in chans:
                with pytest.raises(ChannelBroken) as err:
                    ch.recv(timeout=10)
                errors.append(err.value)
    else:

        async def main() -> None:
            async with await aio.listen(url, address=address) as listener:
                with child(code) as clients:
                    assert await asyncio.to_thread(wait_line, clients) == "ready"
                    chans = [await listener.accept(timeout=10) for _ in range(3)]
                    kill9(clients)
                    for ch in chans:
                        with pytest.raises(ChannelBroken) as err:
                            await ch.recv(timeout=10)
                        errors.append(err.value)

        asyncio.run(main())
    assert all("left the bus without closing the channel" in str(e) for e in errors)


def _forge_event(address: str, subscriber: str, path: str) -> None:
    """Send an Event signal to ``subscriber`` by name from another connection, as any
    program on the bus could; return once the daemon has routed it."""
    conn = BusConnection(address)
    try:
        forged = Message.new_signal(path, "io.ipcwire.Channel1", "Event", "say", ["", b"forged"])
        forged.destination = subscriber
        conn.send(forged)
        conn.call(bus_call("GetId"))
    finally:
        conn.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_subscription_takes_no_event_forged_by_another_connection(
    driver: str, dbus_session: str, dbus_url: Callable[[], str]
) -> None:
    """Any connection could send an Event signal to a subscriber by its unique name, and the
    subscription returned it as the listener's (its match rule only filters broadcasts)."""
    url = dbus_url()
    path = "/io/ipcwire/Test"
    if driver == "blocking":
        with ipcwire.listen(url) as listener, blocking.subscribe(url, timeout=10) as sub:
            assert isinstance(listener, blocking.DbusListener)
            _forge_event(dbus_session, sub._conn.unique_name, path)
            sub._conn.call(bus_call("GetId"))  # it has read what the daemon routed to it
            listener.publish(b"real")
            got = sub.recv(timeout=10)
    else:

        async def main() -> bytes:
            async with await aio.listen(url) as listener, await dbus_aio.subscribe(url) as sub:
                assert isinstance(listener, dbus_aio.AioDbusListener)
                name = sub._bus.unique_name
                assert name is not None
                await asyncio.to_thread(_forge_event, dbus_session, name, path)
                await sub._bus.call(bus_call("GetId"))
                await listener.publish(b"real")
                got: bytes = await sub.recv(timeout=10)
                return got

        got = asyncio.run(main())
    assert got == b"real"


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_listener_writing_to_several_clients_keeps_under_the_system_bus_limit(
    driver: str, configured_bus: Callable[..., str]
) -> None:
    """The system bus's limit of 128 calls awaiting replies is per connection, and a
    listener's channels share its connection: two channels with 100 messages in flight each
    went over it, and the messages refused were lost."""
    address = configured_bus(settings='<limit name="max_replies_per_connection">128</limit>')
    url = "dbus://system/io.ipcwire.Fanout"
    sent = [b"%d" % i for i in range(150)]
    if driver == "blocking":
        with (
            ipcwire.listen(url, address=address) as listener,
            ipcwire.connect(url, address=address, timeout=10) as c1,
            listener.accept(timeout=10) as s1,
            ipcwire.connect(url, address=address, timeout=10) as c2,
            listener.accept(timeout=10) as s2,
        ):

            def burst(s: Channel) -> None:
                for m in sent:
                    s.send(m, timeout=10)

            writers = [in_thread(functools.partial(burst, s)) for s in (s1, s2)]
            got = [[c.recv(timeout=10) for _ in sent] for c in (c1, c2)]
            for t, box in writers:
                assert finished(t) and not isinstance(box[0], BaseException), box
    else:

        async def main() -> list[list[bytes]]:
            async with (
                await aio.listen(url, address=address) as listener,
                await aio.connect(url, address=address, timeout=10) as c1,
                await listener.accept(timeout=10) as s1,
                await aio.connect(url, address=address, timeout=10) as c2,
                await listener.accept(timeout=10) as s2,
            ):

                async def burst(s: Any) -> None:
                    for m in sent:
                        await s.send(m, timeout=10)

                writers = [asyncio.create_task(burst(s)) for s in (s1, s2)]
                got = [[await c.recv(timeout=10) for _ in sent] for c in (c1, c2)]
                await asyncio.gather(*writers)
                return got

        got = asyncio.run(main())
    assert got == [sent, sent]


def test_a_bus_that_does_not_accept_this_user_is_permission_denied(
    killable_bus: tuple[str, subprocess.Popen[str]],
) -> None:
    """A session bus takes a connection of another user (SASL says OK) and then drops it:
    both drivers said MechanismUnavailable, 'cannot reach the D-Bus daemon ... is it running?
    start a session bus with ...', though it runs (sudo -u with the user's bus address)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user")
    address, _ = killable_bus
    os.chmod(Path(address.split("path=")[1].split(",")[0]).parent, 0o755)  # reachable
    code = f"""
        import asyncio, os
        import ipcwire, ipcwire.dbus.aio, ipcwire.dbus.blocking
        from ipcwire import aio
        ipcwire.mechanisms()
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
        url = "dbus://session/io.ipcwire.NotForYou"
        for attempt in (
            lambda: ipcwire.connect(url, address={address!r}, timeout=10),
            lambda: asyncio.run(aio.connect(url, address={address!r}, timeout=10)),
        ):
            try:
                attempt()
            except ipcwire.IpcwireError as exc:
                print(type(exc).__name__, exc.endpoint, "does not accept this user" in str(exc))
        """
    out = run_python(code)
    url = "dbus://session/io.ipcwire.NotForYou"
    assert out.splitlines() == [f"PermissionDenied {url} True"] * 2, out


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_send_waiting_for_the_window_when_the_bus_dies_says_why(
    driver: str, killable_bus: tuple[str, subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 of the daemon while a send waits for the window (the reader reads nothing):
    ChannelBroken at once in both drivers; the asyncio one said only the URL and a colon (the
    exception of its failed call had no text), and asyncio later logged "Future exception was
    never retrieved" with tracebacks (dbus-fast's write futures: the write that failed, and
    writes to the closed socket after the end)."""
    address, daemon = killable_bus
    url = "dbus://session/io.ipcwire.Full/io/ipcwire/Full"
    if driver == "blocking":
        with (
            ipcwire.listen(url, address=address) as listener,
            ipcwire.connect(url, address=address, timeout=10) as c,
            listener.accept(timeout=10),
        ):
            for _ in range(WINDOW):
                c.send(b"unread", timeout=10)
            _kill(daemon)
            with pytest.raises(ChannelBroken) as err:
                c.send(b"one more", timeout=30)  # raises when the connection ends
    else:

        async def main() -> pytest.ExceptionInfo[ChannelBroken]:
            async with (
                await aio.listen(url, address=address) as listener,
                await aio.connect(url, address=address, timeout=10) as c,
                await listener.accept(timeout=10),
            ):
                for _ in range(WINDOW):
                    await c.send(b"unread", timeout=10)
                _kill(daemon)
                with pytest.raises(ChannelBroken) as err:
                    await c.send(b"one more", timeout=30)
                return err

        err = asyncio.run(main())
        gc.collect()  # a future whose error nobody retrieved logs it when collected
        assert [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()] == []
    assert err.value.endpoint == url
    assert re.search(r"the D-Bus daemon closed the connection \(.+\)", str(err.value)), err.value


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_subscription_that_does_not_read_is_ended_not_grown_without_bound(
    driver: str, dbus_url: Callable[[], str]
) -> None:
    """The daemon ends a subscriber that reads too slowly once its buffer for it is full, but
    the driver's reader kept that buffer empty and queued every event: 80 MiB published and
    not read were 80 MiB held by the subscriber, and it never learnt it had fallen behind."""
    url = dbus_url()
    event = b"x" * (1 << 20)
    n = SUBSCRIPTION_BUFFER // len(event) + 16
    got: list[bytes] = []
    if driver == "blocking":
        with ipcwire.listen(url) as listener, blocking.subscribe(url, timeout=10) as sub:
            assert isinstance(listener, blocking.DbusListener)
            for _ in range(n):
                listener.publish(event)
            listener._conn.call(bus_call("GetId"))
            with contextlib.suppress(ChannelBroken):  # cut, or it has read them all
                sub._conn.call(bus_call("GetId"))
            stats = sub.statistics()
            assert stats.buffered_bytes <= SUBSCRIPTION_BUFFER and stats.dropped > 0
            with pytest.raises(ChannelBroken) as err:
                while True:
                    got.append(sub.recv(timeout=10))
    else:

        async def main() -> pytest.ExceptionInfo[ChannelBroken]:
            async with await aio.listen(url) as listener, await dbus_aio.subscribe(url) as sub:
                assert isinstance(listener, dbus_aio.AioDbusListener)
                for _ in range(n):
                    await listener.publish(event)
                await listener._hub.bus.call(bus_call("GetId"))
                with contextlib.suppress(Exception):
                    await sub._bus.call(bus_call("GetId"))
                stats = sub.statistics()
                assert stats.buffered_bytes <= SUBSCRIPTION_BUFFER and stats.dropped > 0
                with pytest.raises(ChannelBroken) as err:
                    while True:
                        got.append(await sub.recv(timeout=10))
                return err

        err = asyncio.run(main())
    assert len(got) == SUBSCRIPTION_BUFFER // len(event)  # what it held came first
    assert err.value.endpoint == url and "did not read its events" in str(err.value)


_Raised = pytest.ExceptionInfo[RemoteProtocolError]


def _past_the_window(client: Channel, extra: int) -> list[str]:
    """Send a window of messages and ``extra`` more on ``client``'s channel, past its window,
    as a peer that ignores it would (the listener reads none): the error names of the replies
    to the extra ones (the others are answered only once read)."""
    assert isinstance(client, blocking.DbusChannel)
    errors: list[str] = []
    all_in = threading.Event()

    def got(reply: Message | None, err: Exception | None) -> None:
        if reply is not None and reply.error_name:
            errors.append(reply.error_name)
            if len(errors) == extra:
                all_in.set()

    for i in range(WINDOW + extra):
        call = deliver_call(client._dest, client._path, client._chan, i.to_bytes(4, "big"))
        client._conn.send(call, got)
    assert all_in.wait(10)
    return errors


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_peer_past_the_window_is_refused_and_the_listener_serves_on(
    driver: str, dbus_url: Callable[[], str]
) -> None:
    """A peer ignoring the flow-control window made the listener's channel queue whatever it
    sent: memory without bound. Now its messages within the window are received, the rest
    refused, then ``recv`` raises RemoteProtocolError, and other clients are served."""
    url = dbus_url()
    want = [i.to_bytes(4, "big") for i in range(WINDOW)]
    if driver == "blocking":
        with ipcwire.listen(url) as listener:
            with ipcwire.connect(url, timeout=10) as c, listener.accept(timeout=10) as s:
                errors = _past_the_window(c, 2)
                got = [s.recv(timeout=10) for _ in range(WINDOW)]
                with pytest.raises(RemoteProtocolError) as err:
                    s.recv(timeout=10)
            with ipcwire.connect(url, timeout=10) as c, listener.accept(timeout=10) as s:
                c.send(b"still served")
                assert s.recv(timeout=10) == b"still served"
    else:

        async def main() -> tuple[
            list[str], list[bytes], pytest.ExceptionInfo[RemoteProtocolError]
        ]:
            async with await aio.listen(url) as listener:
                c = await asyncio.to_thread(ipcwire.connect, url, timeout=10)
                try:
                    async with await listener.accept(timeout=10) as s:
                        errors = await asyncio.to_thread(_past_the_window, c, 2)
                        got = [await s.recv(timeout=10) for _ in range(WINDOW)]
                        with pytest.raises(RemoteProtocolError) as err:
                            await s.recv(timeout=10)
                finally:
                    await asyncio.to_thread(c.close)
                async with (
                    await aio.connect(url, timeout=10) as c2,
                    await listener.accept(timeout=10) as s2,
                ):
                    await c2.send(b"still served")
                    assert await s2.recv(timeout=10) == b"still served"
            return errors, got, err

        errors, got, err = asyncio.run(main())
    assert errors == [ERROR_REFUSED] * 2
    assert got == want
    assert err.value.endpoint == url and "flow-control window" in str(err.value)


@pytest.mark.parametrize("driver", DRIVERS)
def test_one_connection_opening_many_channels_is_refused_past_a_few(
    driver: str, dbus_session: str, dbus_url: Callable[[], str]
) -> None:
    """A listener opened a channel for every handshake on one connection, however many (an
    ipcwire client makes a connection per channel); each could hold a window of messages."""
    url = dbus_url()
    name = url.split("/")[3]

    def open_channels() -> list[str]:
        conn = BusConnection(dbus_session)
        answers = []
        try:
            for _ in range(CHANNELS_PER_PEER + 2):
                calls = ClientHandshakeCalls(ChannelOptions.build(parse_url(url), {}), name, "/")
                call = calls.next_call()
                assert call is not None
                call.path = "/" + name.replace(".", "/")
                try:
                    conn.call(call, timeout=10)
                    answers.append("answered")
                except DbusError as exc:
                    answers.append(exc.name)
        finally:
            conn.close()
        return answers

    if driver == "blocking":
        with ipcwire.listen(url) as listener:
            answers = open_channels()
            with ipcwire.connect(url, timeout=10) as c:
                c.send(b"still served")
                got = b""
                for _ in range(CHANNELS_PER_PEER + 1):  # the others' first, then it
                    with listener.accept(timeout=10) as s:
                        try:
                            got = s.recv(timeout=10)
                            break
                        except ChannelBroken:  # their connection left: the end is told
                            pass
    else:

        async def main() -> tuple[list[str], bytes]:
            async with await aio.listen(url) as listener:
                answers = await asyncio.to_thread(open_channels)
                async with await aio.connect(url, timeout=10) as c:
                    await c.send(b"still served")
                    for _ in range(CHANNELS_PER_PEER + 1):
                        async with await listener.accept(timeout=10) as s:
                            try:
                                return answers, await s.recv(timeout=10)
                            except ChannelBroken:
                                pass
            raise AssertionError("the client's channel was not accepted")

        answers, got = asyncio.run(main())
    assert answers == ["answered"] * CHANNELS_PER_PEER + [ERROR_REFUSED] * 2
    assert got == b"still served"
