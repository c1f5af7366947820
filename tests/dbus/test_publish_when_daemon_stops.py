"""``publish`` when the bus daemon stops reading (stopped with SIGSTOP, or hung): it waits at
most ``timeout=`` (finite by default) and raises ``Timeout`` with nothing sent, and a close of
the listener ends a publish that waits without a limit. Before: the blocking ``publish`` had
no ``timeout=`` and waited in ``sendall`` for ever, and ``close()`` behind it. The asyncio
``publish`` was not awaitable: it queued every event in dbus-fast's writer (97,600 events of
10 kB, a gigabyte, in 5 s); now it is a coroutine that waits for the daemon's socket to take
the event, with the same ``timeout=`` and words."""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from tests._loops import AioRun
from tests._threads import finished, in_thread

import ipcwire
from ipcwire.dbus._proto import bus_call
from ipcwire.dbus.aio import AioDbusListener
from ipcwire.dbus.aio import subscribe as asubscribe
from ipcwire.dbus.blocking import DbusListener, subscribe
from ipcwire.errors import ChannelBroken, ChannelClosed, Timeout

Bus = tuple[str, "subprocess.Popen[str]"]
URL = "dbus://session/io.ipcwire.Stopped"
EVENT = b"x" * 10_000  # under half the socket's buffer: written whole, or not at all
SHORT = 0.2  # seconds a publish waits for the stopped daemon
MOST = 10_000  # publishes before the socket's buffer must be full


@contextmanager
def stopped(daemon: subprocess.Popen[str]) -> Iterator[None]:
    """The daemon stops reading (SIGSTOP) for the block, and runs again after it."""
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(daemon.pid, signal.SIGCONT)


def fill(listener: DbusListener) -> tuple[int, Timeout]:
    """Publish until the daemon's socket is full: the events taken, and the Timeout."""
    for n in range(MOST):
        try:
            listener.publish(EVENT, timeout=SHORT)
        except Timeout as exc:
            return n, exc
    raise AssertionError(f"{MOST} events published to a stopped daemon")


async def afill(listener: AioDbusListener) -> tuple[int, Timeout]:
    for n in range(MOST):
        try:
            await listener.publish(EVENT, timeout=SHORT)
        except Timeout as exc:
            return n, exc
    raise AssertionError(f"{MOST} events published to a stopped daemon")


def check_timeout(exc: Timeout) -> None:
    assert exc.endpoint == URL
    assert URL in str(exc) and "the D-Bus daemon is not reading" in str(exc)
    assert "nothing was sent" in str(exc)


@pytest.mark.parametrize("listener_class", [DbusListener, AioDbusListener])
def test_publish_waits_a_finite_time_by_default(
    listener_class: type[DbusListener] | type[AioDbusListener],
) -> None:
    timeout = inspect.signature(listener_class.publish).parameters.get("timeout")
    assert timeout is not None, "publish() takes no timeout="
    assert isinstance(timeout.default, float) and math.isfinite(timeout.default)


def test_publish_to_a_daemon_not_reading_times_out_with_nothing_sent(killable_bus: Bus) -> None:
    address, daemon = killable_bus
    with (
        ipcwire.listen(URL, address=address) as listener,
        subscribe(URL, address=address, timeout=10) as sub,
    ):
        assert isinstance(listener, DbusListener)
        with stopped(daemon):
            sent, exc = fill(listener)
        check_timeout(exc)
        # The connection still works, and the event that timed out never reached the bus:
        # round trips on both connections, then the subscriber holds exactly what was taken.
        listener._conn.call(bus_call("GetId"))
        sub._conn.call(bus_call("GetId"))
        assert sub.statistics().buffered_bytes == sent * len(EVENT)
        listener.publish(b"after", timeout=10)


@pytest.mark.parametrize("wait", [{}, {"timeout": None}], ids=["default", "no-limit"])
def test_close_ends_a_publish_waiting_for_a_daemon_not_reading(
    killable_bus: Bus, wait: dict[str, float | None]
) -> None:
    """Closing takes 2 s here (the daemon never hangs up), less than the default timeout."""
    address, daemon = killable_bus
    listener = ipcwire.listen(URL, address=address)
    assert isinstance(listener, DbusListener)
    with stopped(daemon):
        fill(listener)
        t, box = in_thread(lambda: listener.publish(EVENT, **wait))  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while not listener._conn._write_lock.locked():  # nothing to wait on: a bounded poll
            assert t.is_alive() and time.monotonic() < deadline, box
            time.sleep(0.001)
        c, _ = in_thread(listener.close)
        assert finished(c, 4.0), "close() did not return"
        assert finished(t, 1.0), "the publish did not end"
    assert isinstance(box[0], ChannelClosed) and box[0].endpoint == URL
    assert "closed while publishing" in str(box[0])


def test_asyncio_publish_waits_for_the_daemon(killable_bus: Bus, aio_run: AioRun) -> None:
    address, daemon = killable_bus

    async def main() -> None:
        async with (
            await ipcwire.aio.listen(URL, address=address) as listener,
            await asubscribe(URL, address=address, timeout=10) as sub,
        ):
            assert isinstance(listener, AioDbusListener)
            with stopped(daemon):
                sent, exc = await afill(listener)
            check_timeout(exc)
            await listener._hub.bus.call(bus_call("GetId"))
            await sub._bus.call(bus_call("GetId"))
            assert sub.statistics().buffered_bytes == sent * len(EVENT)  # nothing piled up
            await listener.publish(b"after", timeout=10)

    aio_run(main())


def test_asyncio_close_ends_a_publish_waiting_for_a_daemon_not_reading(
    killable_bus: Bus, aio_run: AioRun
) -> None:
    address, daemon = killable_bus

    async def main() -> BaseException | None:
        listener = await ipcwire.aio.listen(URL, address=address)
        assert isinstance(listener, AioDbusListener)
        with stopped(daemon):
            await afill(listener)
            task = asyncio.get_running_loop().create_task(listener.publish(EVENT, timeout=None))
            await asyncio.sleep(0)  # the task runs up to its wait for the daemon
            assert not task.done()
            async with asyncio.timeout(4.0):
                await listener.aclose()
            done, _ = await asyncio.wait([task], timeout=1.0)
            assert done, "the publish did not end"
            return task.exception()

    err = aio_run(main())
    assert isinstance(err, ChannelClosed) and err.endpoint == URL
    assert "closed while publishing" in str(err)


@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_an_event_cut_part_way_cuts_the_connection(killable_bus: Bus, driver: str) -> None:
    """An event larger than the socket's buffer, not taken in time, was written in part: the
    daemon could make no sense of anything after it, so the connection is cut rather than
    used for more."""
    address, daemon = killable_bus
    big = b"x" * (4 << 20)

    def check(timed_out: Timeout, after: BaseException) -> None:
        assert timed_out.endpoint == URL and "part-way through the message" in str(timed_out)
        assert isinstance(after, ChannelBroken) and after.endpoint == URL
        assert "did not read a message within 0.2 s" in str(after)

    if driver == "blocking":
        with ipcwire.listen(URL, address=address) as listener, stopped(daemon):
            assert isinstance(listener, DbusListener)
            with pytest.raises(Timeout) as timed_out:
                listener.publish(big, timeout=SHORT)
            with pytest.raises(ChannelBroken) as after:
                listener.publish(b"next", timeout=SHORT)
        check(timed_out.value, after.value)
        return

    async def main() -> tuple[Timeout, BaseException]:
        async with await ipcwire.aio.listen(URL, address=address) as listener:
            assert isinstance(listener, AioDbusListener)
            with stopped(daemon):
                with pytest.raises(Timeout) as timed_out:
                    await listener.publish(big, timeout=SHORT)
                with pytest.raises(ChannelBroken) as after:
                    await listener.publish(b"next", timeout=SHORT)
            return timed_out.value, after.value

    check(*asyncio.run(main()))
