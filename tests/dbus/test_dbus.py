"""D-Bus against a real dbus-daemon: names, credentials, dead peers, flow control, signals,
and what happens without a bus."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message
from tests._proc import child, kill9, run_python, wait_line
from tests._threads import finished, in_thread
from tests.test_fork import FORK

import ipcwire
from ipcwire import aio
from ipcwire.dbus._conn import BusConnection
from ipcwire.dbus._proto import WINDOW, bus_call
from ipcwire.dbus.aio import AioDbusListener
from ipcwire.dbus.aio import subscribe as asubscribe
from ipcwire.dbus.blocking import DbusChannel, DbusListener, subscribe
from ipcwire.errors import (
    AddressInUse,
    ChannelBroken,
    ConnectionRefused,
    InvalidURL,
    LocalProtocolError,
    MechanismUnavailable,
    RemoteProtocolError,
    Timeout,
)


def _pair(url: str, **kw: object) -> tuple[DbusListener, DbusChannel, DbusChannel]:
    listener = ipcwire.listen(url, **kw)  # type: ignore[arg-type]
    assert isinstance(listener, DbusListener)
    client = ipcwire.connect(url, timeout=10, **kw)  # type: ignore[arg-type]
    server = listener.accept(timeout=10)
    assert isinstance(client, DbusChannel) and isinstance(server, DbusChannel)
    return listener, client, server


def test_peers_know_each_other_from_the_daemon(dbus_url: Callable[[], str]) -> None:
    url = dbus_url()
    with (
        child(
            f'import sys, ipcwire\nch = ipcwire.connect("{url}", reconnect=20)\n'
            'print("in", flush=True)\nsys.stdin.read()\n'
        ) as proc,
        ipcwire.listen(url) as listener,
    ):
        s = listener.accept(timeout=20)
        with s:
            assert wait_line(proc) == "in"
            assert s.peer is not None
            assert s.peer.pid == proc.pid and s.peer.uid == os.getuid()


def test_the_name_is_taken(dbus_url: Callable[[], str]) -> None:
    url = dbus_url()
    with child(
        f'import sys, ipcwire\nl = ipcwire.listen("{url}")\nprint("ready", flush=True)\n'
        "sys.stdin.read()\n"
    ) as proc:
        assert wait_line(proc) == "ready"
        with pytest.raises(AddressInUse) as err:
            ipcwire.listen(url)
        assert err.value.pid == proc.pid and f"pid {proc.pid}" in str(err.value)
        kill9(proc)
    with ipcwire.listen(url):  # the bus released the name when its owner died
        pass


def test_a_killed_peer_is_an_error_after_its_messages(dbus_url: Callable[[], str]) -> None:
    url = dbus_url()
    with (
        ipcwire.listen(url) as listener,
        child(
            f"""
import sys, ipcwire
ch = ipcwire.connect("{url}", timeout=10)
for i in range(3):
    ch.send(b"m%d" % i)
print("sent", flush=True)
sys.stdin.read()
"""
        ) as proc,
    ):
        s = listener.accept(timeout=10)
        with s:
            assert wait_line(proc) == "sent"
            kill9(proc)
            assert [s.recv(timeout=5) for _ in range(3)] == [b"m0", b"m1", b"m2"]
            start = time.monotonic()
            with pytest.raises(ChannelBroken, match="left the bus"):
                s.recv(timeout=30)
            assert time.monotonic() - start < 10
            with pytest.raises(ChannelBroken):
                s.send(b"to nobody")


def test_a_reader_that_does_not_read_slows_the_writer(dbus_url: Callable[[], str]) -> None:
    listener, c, s = _pair(dbus_url())
    with listener, c, s:
        for i in range(WINDOW):
            c.send(b"%d" % i, timeout=10)
        with pytest.raises(Timeout, match="unacknowledged"):
            c.send(b"one too many", timeout=0.2)
        assert s.recv(timeout=5) == b"0"  # taking one acknowledges it...
        c.send(b"fits again", timeout=10)  # ...and makes room
        got = [s.recv(timeout=5) for _ in range(WINDOW)]
        assert got[-1] == b"fits again"


def test_publish_subscribe_with_signals(dbus_url: Callable[[], str]) -> None:
    url = dbus_url()
    with ipcwire.listen(url, codec="json") as listener:
        assert isinstance(listener, DbusListener)
        with (
            subscribe(url, topic="news", codec="json") as news,
            subscribe(url, codec="json") as everything,
        ):
            listener.publish({"n": 1}, topic="news")
            listener.publish({"n": 2}, topic="weather")
            assert news.recv_event(timeout=5) == ("news", {"n": 1})
            assert everything.recv_event(timeout=5) == ("news", {"n": 1})
            assert everything.recv_event(timeout=5) == ("weather", {"n": 2})
            with pytest.raises(Timeout):
                news.recv(timeout=0.1)
            with pytest.raises(LocalProtocolError, match="only receives"):
                news.send({"x": 1})


def test_asyncio_publish_subscribe(dbus_url: Callable[[], str]) -> None:
    url = dbus_url()

    async def main() -> None:
        async with await aio.listen(url, codec="json") as listener:
            assert isinstance(listener, AioDbusListener)
            sub = await asubscribe(url, topic="t", codec="json")
            async with sub:
                await listener.publish([1, 2], topic="t")
                assert await sub.recv_event(timeout=5) == ("t", [1, 2])

    asyncio.run(main())


def test_asyncio_objects_leave_no_task_pending_when_their_loop_closes(
    killable_bus: tuple[str, subprocess.Popen[str]],
) -> None:
    """A listener, a channel pair and a subscription nobody closed, and a subscription closed
    without waiting: once their loop stops and closes, no task of theirs is pending (it would
    be "destroyed but it is pending" when collected). Only their sockets are left unclosed."""
    address, _ = killable_bus
    url = "dbus://session/io.ipcwire.Left/io/ipcwire/Left"
    reports: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _, context: reports.append(context))

    async def main() -> list[object]:
        listener = await aio.listen(url, address=address)
        client = await aio.connect(url, address=address, timeout=10)
        server = await listener.accept(timeout=10)
        kept = await asubscribe(url, address=address, timeout=10)
        closed = await asubscribe(url, address=address, timeout=10)
        closed.close()
        return [listener, client, server, kept, closed]

    try:
        objects = loop.run_until_complete(main())
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    finally:
        loop.close()
    assert pending == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del objects, pending
        gc.collect()
    assert [r["message"] for r in reports] == []
    assert all(issubclass(w.category, ResourceWarning) for w in caught), caught


def test_a_name_owned_by_something_else(dbus_url: Callable[[], str]) -> None:
    url = dbus_url()
    name = url.split("/")[3]
    conn = BusConnection(os.environ["DBUS_SESSION_BUS_ADDRESS"])

    def refuse(msg: Message) -> None:  # a service that knows no ipcwire
        conn.send(Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "no"))

    conn.add_handler(refuse)
    try:
        conn.call(bus_call("RequestName", "su", [name, 4]))
        with pytest.raises(RemoteProtocolError, match="not an ipcwire listener"):
            ipcwire.connect(url, timeout=5)
    finally:
        conn.close()


def test_nothing_listening(dbus_url: Callable[[], str]) -> None:
    with pytest.raises(ConnectionRefused, match="no connection owns"):
        ipcwire.connect(dbus_url(), timeout=5)


def test_no_bus_says_how_to_start_one(
    dbus_url: Callable[[], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = dbus_url()
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(MechanismUnavailable, match="dbus-run-session"):
        ipcwire.connect(url)
    with pytest.raises(MechanismUnavailable, match="is it running"):
        ipcwire.listen(url, address=f"unix:path={tmp_path}/no-bus-here")

    async def main() -> None:
        with pytest.raises(MechanismUnavailable, match="is it running"):
            await aio.connect(url, address=f"unix:path={tmp_path}/no-bus-here")

    asyncio.run(main())


def test_urls() -> None:
    for bad in ("dbus://session/notaname", "dbus://elsewhere/org.x.Y", "dbus://session/a.b/x-y"):
        with pytest.raises(InvalidURL):
            ipcwire.connect(bad)


def test_many_clients_at_once(dbus_url: Callable[[], str]) -> None:
    url = dbus_url()
    with ipcwire.listen(url, codec="json") as listener:

        def echo(ch: ipcwire.Channel) -> None:
            for msg in ch:
                ch.send(msg)

        server = threading.Thread(target=listener.serve, args=(echo,))
        server.start()
        errors: list[str] = []

        def client(k: int) -> None:
            with ipcwire.connect(url, codec="json", timeout=10) as ch:
                for i in range(20):
                    if ch.request([k, i], timeout=10) != [k, i]:
                        errors.append(f"client {k}")

        threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        listener.close()
        server.join(20)
        assert not errors


def test_platforms_says_whether_a_bus_is_there(dbus_session: str, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    def dbus_row(env: dict[str, str]) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-m", "ipcwire", "platforms", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=env,
        )
        rows = {m["scheme"]: m for m in json.loads(out.stdout)["mechanisms"]}
        return rows["dbus"]  # type: ignore[no-any-return]

    assert dbus_row(dict(os.environ))["available"] is True
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    row = dbus_row(env)
    assert row["available"] is False and "dbus-run-session" in str(row["reason"])
    env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={tmp_path}/gone"
    assert "does not answer" in str(dbus_row(env)["reason"])


def test_send_and_close_are_bounded_when_the_daemon_stops_reading(
    killable_bus: tuple[str, subprocess.Popen[str]],
) -> None:
    """A daemon that stops reading (SIGSTOPped, hung): send(timeout=0.5) of a message larger
    than the socket's buffer waited in sendall() for ever, and close() behind it."""
    address, daemon = killable_bus
    url = "dbus://session/io.ipcwire.Stalled"
    with ipcwire.listen(url, address=address) as listener:
        c = ipcwire.connect(url, address=address, timeout=10)
        s = listener.accept(timeout=10)  # open: its Close must not race the stop
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            t, box = in_thread(lambda: c.send(b"x" * 4_000_000, timeout=0.5))
            assert finished(t), "send(timeout=0.5) did not return"
            assert isinstance(box[0], Timeout) and box[0].endpoint == url
            assert "the D-Bus daemon is not reading" in str(box[0])
            with pytest.raises(ChannelBroken, match=r"did not read a message within 0\.5 s"):
                c.send(b"next", timeout=0.5)  # the half-sent message cut the connection
            t, _ = in_thread(c.close)
            assert finished(t), "close() did not return"
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
            s.close()


def test_asyncio_sync_close_hangs_up_when_asyncio_run_ends(
    killable_bus: tuple[str, subprocess.Popen[str]],
) -> None:
    """close() (not aclose()) of an asyncio listener and channels, then the end of
    asyncio.run(): the hang-up task was cancelled before it hung up, so the bus sockets were
    left open until garbage collection (ResourceWarning: unclosed socket)."""
    address, _ = killable_bus
    bus_path = address.split("path=")[1].split(",")[0]
    url = "dbus://session/io.ipcwire.SyncClose"

    async def main() -> None:
        listener = await aio.listen(url, address=address)
        client = await aio.connect(url, address=address, timeout=10)
        server = await listener.accept(timeout=10)
        for obj in (client, server, listener):
            obj.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    assert [str(w.message) for w in caught if bus_path in str(w.message)] == []


def test_a_huge_timeout_is_no_limit(dbus_url: Callable[[], str]) -> None:
    """send(timeout=math.inf) raised OverflowError (the write lock's wait)."""
    url = dbus_url()
    with ipcwire.listen(url) as lst, ipcwire.connect(url, timeout=10) as client:
        client.send(b"one", timeout=float("inf"))
        with lst.accept(timeout=float("inf")) as server:
            assert server.recv(timeout=1e12) == b"one"


def test_a_forked_child_closing_its_copies_leaves_the_parent_alone(
    dbus_url: Callable[[], str],
) -> None:
    """The child's close of a channel sent the channel's Close to the parent's peer and shut
    the bus connection down, so the parent's next send raised ChannelBroken ('the D-Bus
    daemon closed the connection'). tests/test_fork.py's script, over the session bus."""
    script = (
        FORK.replace("sys.argv[1]", repr(dbus_url()))
        .replace("sys.argv[2]", repr("1"))
        .replace("sys.argv[3]", repr("0"))
    )
    assert run_python(script) == "ok"
