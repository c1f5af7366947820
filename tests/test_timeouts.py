"""``timeout=float("inf")`` (or any timeout over ``ipcwire._deadline.NO_LIMIT``) means no limit.

Threads' waits and socket timeouts refuse such values: ``accept(timeout=math.inf)``,
``recv(timeout=1e12)`` and the like raised a bare ``OverflowError`` at once on most blocking
drivers. A concurrent ``accept()`` of an mq listener also waited for another thread's accept
past its own timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests._proc import child, wait_line, wait_until
from tests._threads import finished, in_thread

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError, Timeout

# 3e6 s (35 days): under NO_LIMIT, over poll()'s longest wait (2**31-1 ms), which refuses it
HUGE = [float("inf"), 1e12, 3e6]


def _name() -> str:
    return f"ipcwt-{uuid.uuid4().hex[:10]}"


# mechanism -> URL; the receiving end is the accepted channel unless said otherwise
CONNECTED: dict[str, Callable[[Path], str]] = {
    "unix": lambda d: f"unix:{d}/s.sock",
    "tcp": lambda d: "tcp://127.0.0.1:0",
    "shm": lambda d: f"shm://{_name()}",
    "mq": lambda d: f"mq://{_name()}",
    "udp": lambda d: "udp://127.0.0.1:0",
    "ws": lambda d: "ws://127.0.0.1:0/x",
    "http+unix": lambda d: f"http+unix://{d}/h.sock",
    "grpc": lambda d: "grpc://127.0.0.1:0",
}


@contextmanager
def pair(url: str) -> Iterator[tuple[Any, Any]]:
    """(client, server) of a connection-oriented mechanism."""
    with ipcwire.listen(url) as lst:
        t, box = in_thread(lambda: ipcwire.connect(lst.url, timeout=10))
        if url.startswith("udp"):
            assert finished(t)
            box[0].send(b"hello")  # a UDP peer exists once it sent something
        with lst.accept(timeout=10) as server:
            assert finished(t)
            with box[0] as client:
                if url.startswith("udp"):
                    assert server.recv(timeout=10) == b"hello"
                yield client, server


@pytest.mark.parametrize("huge", HUGE)
@pytest.mark.parametrize("kind", sorted(CONNECTED))
def test_a_huge_timeout_waits_without_limit(kind: str, huge: float, tmp_path: Path) -> None:
    url = CONNECTED[kind](tmp_path)
    with ipcwire.listen(url) as lst:
        t, accepted = in_thread(lambda: lst.accept(timeout=huge))
        client = ipcwire.connect(lst.url, timeout=10)
        if kind == "udp":
            client.send(b"hello")
        assert finished(t)
        assert not isinstance(accepted[0], Exception), accepted
        accepted[0].close()
        client.close()
    with pair(url) as (client, server):
        t, got = in_thread(lambda: server.recv(timeout=huge))
        client.send(b"one")
        assert finished(t)
        assert got == [b"one"]
        client.send(b"two", timeout=huge)
        assert server.recv_many(timeout=huge) == [b"two"]


def test_one_way_mechanisms_take_a_huge_timeout(tmp_path: Path) -> None:
    with ipcwire.listen(f"fifo://{tmp_path}/f.fifo") as lst:
        reader = lst.accept(timeout=float("inf"))
        t, got = in_thread(lambda: reader.recv(timeout=float("inf")))
        with ipcwire.connect(lst.url, timeout=10) as writer:
            writer.send(b"fifo", timeout=float("inf"))
            assert finished(t)
        assert got == [b"fifo"]
        reader.close()
    with ipcwire.listen(f"spool://{tmp_path}/sp") as lst:
        consumer = lst.accept(timeout=float("inf"))
        t, got = in_thread(lambda: consumer.recv(timeout=1e12))
        with ipcwire.connect(lst.url, timeout=10) as producer:
            producer.send(b"spool")
        assert finished(t)
        assert got == [b"spool"]
        consumer.close()
    with ipcwire.listen("sse+http://127.0.0.1:0/events") as lst:
        t, accepted = in_thread(lambda: lst.accept(timeout=float("inf")))
        with ipcwire.connect(lst.url, timeout=10) as client:
            assert finished(t)
            with accepted[0] as server:
                t, got = in_thread(lambda: client.recv(timeout=float("inf")))
                server.send(b"sse")
                assert finished(t)
                assert got == [b"sse"]


def test_mq_accept_keeps_its_timeout_while_another_thread_accepts() -> None:
    with ipcwire.listen(f"mq://{_name()}") as lst:
        waiting, _ = in_thread(lst.accept)  # no timeout: holds the turn to accept
        assert wait_until(lst._accept_lock.locked)  # type: ignore[attr-defined]
        t, late = in_thread(lambda: lst.accept(timeout=0.2))
        assert finished(t), "accept(timeout=0.2) waited for the other thread's accept"
        assert isinstance(late[0], Timeout)
        lst.close()
        assert finished(waiting)


@pytest.mark.parametrize("huge", [float("inf"), 3e6])
@pytest.mark.parametrize("kind", ["unix", "tcp", "shm", "ws", "grpc", "mq"])
def test_connect_timeout_is_checked_and_inf_is_no_limit(
    kind: str, huge: float, tmp_path: Path
) -> None:
    """connect(timeout=nan) raised a bare ValueError (unix: settimeout), timeout=inf an
    OverflowError; found by helper-41."""
    from ipcwire.errors import ConfigurationError

    url = CONNECTED[kind](tmp_path)
    with ipcwire.listen(url) as lst:
        for bad in (float("nan"), -1, "10"):  # (a str too: from a config file)
            with pytest.raises(ConfigurationError, match="timeout="):
                ipcwire.connect(lst.url, timeout=bad)  # type: ignore[arg-type]
        t, box = in_thread(lambda: ipcwire.connect(lst.url, timeout=huge))
        with lst.accept(timeout=10):
            assert finished(t)
            assert not isinstance(box[0], Exception), box
            box[0].close()


@pytest.mark.parametrize("kind", sorted(CONNECTED))
def test_a_negative_timeout_does_not_wait(kind: str, tmp_path: Path) -> None:
    """A timeout of -1 or -inf is no wait, as 0 is: recv(timeout=-inf) raised a bare
    OverflowError on unix, tcp and mq (the socket timeval, poll()'s milliseconds)."""
    with pair(CONNECTED[kind](tmp_path)) as (client, server):
        for negative in (-1.0, float("-inf")):
            with pytest.raises(Timeout):
                server.recv(timeout=negative)
            with pytest.raises(Timeout):
                server.recv_many(timeout=negative)
            client.send(b"room", timeout=negative)
            assert server.recv(timeout=10) == b"room"


def test_shm_connect_timeout_names_the_limit_that_passed() -> None:
    """Since 365cb31 timeout= bounds an shm connect's handshake too, but the Timeout still said
    'did not complete the handshake within 10.0 s' (handshake_timeout) after 0.3 s. A
    listener that is stopped (SIGSTOP) takes the connection and never answers; both
    drivers."""
    url = f"shm://{_name()}"
    code = f"import ipcwire\nlst = ipcwire.listen({url!r})\nprint('ready', flush=True)\ninput()"
    with child(code) as proc:
        assert wait_line(proc) == "ready"
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(Timeout, match=r"within 0\.3 s"):
                ipcwire.connect(url, timeout=0.3)

            async def main() -> None:
                with pytest.raises(Timeout, match=r"within 0\.3 s"):
                    await aio.connect(url, timeout=0.3)

            asyncio.run(main())
        finally:
            os.kill(proc.pid, signal.SIGCONT)


@pytest.mark.parametrize("kind", sorted(CONNECTED))
def test_a_nan_timeout_is_refused_not_waited_on(kind: str, tmp_path: Path) -> None:
    """timeout=nan made accept() spin forever on unix, tcp, shm, ws and grpc (a thread's wait
    takes NaN as "no wait" and the deadline never passes), recv() wait forever on mq and grpc,
    and was a bare ValueError ("cannot convert float NaN to integer") elsewhere: now a
    ConfigurationError saying so (shm's ring too, since 754c219)."""
    nan = float("nan")
    url = CONNECTED[kind](tmp_path)
    with ipcwire.listen(url) as lst:
        t, box = in_thread(lambda: lst.accept(timeout=nan))
        assert finished(t, 10), "accept(timeout=nan) is still waiting"
        assert isinstance(box[0], ConfigurationError), box
        assert "timeout=nan" in str(box[0])
    with pair(url) as (client, server):
        for call in (lambda: server.recv(timeout=nan), lambda: server.recv_many(timeout=nan)):
            t, box = in_thread(call)
            assert finished(t, 10), "a receive with timeout=nan is still waiting"
            assert isinstance(box[0], ConfigurationError), box
            assert "nan" in str(box[0]).lower()
        client.send(b"still usable")
        assert server.recv(timeout=10) == b"still usable"


def test_a_nan_timeout_on_a_spool_is_refused(tmp_path: Path) -> None:
    """spool's recv(timeout=nan) waited forever (min() with NaN kept the reap interval)."""
    with ipcwire.listen(f"spool://{tmp_path}/sp") as lst, lst.accept(timeout=10) as consumer:
        t, box = in_thread(lambda: consumer.recv(timeout=float("nan")))
        assert finished(t, 10), "recv(timeout=nan) is still waiting"
        assert isinstance(box[0], ConfigurationError), box


@pytest.mark.parametrize("kind", sorted(CONNECTED))
def test_a_nan_timeout_is_refused_by_the_asyncio_drivers(kind: str, tmp_path: Path) -> None:
    """asyncio.timeout(nan) puts a timer at NaN, which the event loop cannot order: accept(),
    recv() and request() with timeout=nan never ended and the loop spun at 100% CPU (every
    asyncio driver). Now ConfigurationError, and the channel stays usable."""
    nan = float("nan")
    url = CONNECTED[kind](tmp_path)

    async def refused(call: Any) -> None:
        with pytest.raises(ConfigurationError, match="timeout=nan"):
            await asyncio.wait_for(call, 10)  # (a hang fails here, not the suite)

    async def main() -> None:
        async with await aio.listen(url) as lst:
            await refused(lst.accept(timeout=nan))
            accepting = asyncio.ensure_future(lst.accept(timeout=10))
            async with await aio.connect(lst.url, timeout=10) as client:
                if kind == "udp":
                    await client.send(b"hello")
                async with await accepting as server:
                    if kind == "udp":
                        assert await server.recv(timeout=10) == b"hello"
                    await refused(server.recv(timeout=nan))
                    await refused(server.recv_many(timeout=nan))
                    await client.send(b"still usable")
                    assert await server.recv(timeout=10) == b"still usable"

    asyncio.run(main())
