"""What ``serve()`` tells whoever runs the server when a handler ends badly.

Before, a client killed with -9 under a running handler was logged at INFO (not shown by
default: the server printed nothing), as "handler for unix:///x.sock ended: unix:///x.sock
went away", which reads as if the server went away and does not say which client. Now: the
channel failing under the handler is a WARNING naming the client (its pid and uid), a
handler's own exception an ERROR with its traceback, and the listener's own close ending the
handlers of its open channels stays quiet (DEBUG). Both APIs, the same words.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests._proc import child, kill9, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel

CLIENT = """
import ipcwire
with ipcwire.connect({url!r}, timeout=10) as ch:
    assert ch.request(b"hi", timeout=10) == b"hi"
    print("ready", flush=True)
    ch.recv()  # killed here
"""


@pytest.fixture
def records() -> Iterator[queue.Queue[logging.LogRecord]]:
    """The ``ipcwire`` logger's records of INFO and above, as they come."""
    got: queue.Queue[logging.LogRecord] = queue.Queue()

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.put(record)

    logger = logging.getLogger("ipcwire")
    handler = Catch(logging.INFO)
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield got
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _next(records: queue.Queue[logging.LogRecord]) -> logging.LogRecord:
    return records.get(timeout=20)


def _echo(ch: Channel) -> None:
    for msg in ch:
        if msg == b"raise":
            raise ValueError("the handler's own bug")
        ch.send(msg)


async def _aecho(ch: AioChannel) -> None:
    async for msg in ch:
        if msg == b"raise":
            raise ValueError("the handler's own bug")
        await ch.send(msg)


def _check(records: queue.Queue[logging.LogRecord], url: str) -> None:
    """The three endings, in order: a client killed with -9, a handler that raises, and
    (checked by the caller) the listener's close."""
    with child(CLIENT.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        kill9(proc)
        rec = _next(records)
    assert rec.levelno == logging.WARNING
    text = rec.getMessage()
    assert f"a client of {url} (pid {proc.pid}, uid {os.getuid()})" in text
    assert "ChannelBroken" not in text and "went away" in text

    with ipcwire.connect(url, timeout=10) as ch:
        ch.send(b"raise")
        rec = _next(records)
    assert rec.levelno == logging.ERROR
    assert f"the handler of a client of {url} (pid {os.getpid()}" in rec.getMessage()
    assert rec.exc_info is not None and rec.exc_info[0] is ValueError


def test_blocking_serve_logs_a_failed_client_as_a_warning_naming_it(
    tmp_path: Path, records: queue.Queue[logging.LogRecord]
) -> None:
    lst = ipcwire.listen(f"unix://{tmp_path}/s.sock")
    server = threading.Thread(target=lst.serve, args=(_echo,))
    server.start()
    try:
        _check(records, lst.url)
        with ipcwire.connect(lst.url, timeout=10) as ch:
            assert ch.request(b"x", timeout=10) == b"x"  # its handler now waits in recv
            lst.close()
            server.join(20)
    finally:
        lst.close()
        server.join(20)
    assert not server.is_alive()
    assert records.empty()  # the close ended that handler quietly (DEBUG)


def test_asyncio_serve_logs_a_failed_client_as_a_warning_naming_it(
    tmp_path: Path, records: queue.Queue[logging.LogRecord]
) -> None:
    async def main() -> None:
        lst = await aio.listen(f"unix://{tmp_path}/s.sock")
        serving = asyncio.ensure_future(lst.serve(_aecho))
        try:
            await asyncio.to_thread(_check, records, lst.url)
            with await asyncio.to_thread(ipcwire.connect, lst.url, timeout=10) as ch:
                assert await asyncio.to_thread(ch.request, b"x", timeout=10) == b"x"
                await lst.aclose()
                await asyncio.wait_for(serving, 20)
        finally:
            await lst.aclose()
            serving.cancel()

    asyncio.run(main())
    assert records.empty()


def _failing_clients(url: str, n: int) -> None:
    """``n`` clients, one after another, each served by a handler that fails; each waits for
    its end (the handler's failure, told by the goodbye) before the next connects."""
    for i in range(n):
        with ipcwire.connect(url, timeout=10) as ch:
            ch.send(b"%d" % i)
            with pytest.raises(ipcwire.ChannelBroken):
                ch.recv(timeout=10)


def _bounded(records: queue.Queue[logging.LogRecord], url: str) -> None:
    """12 handlers ended by the same error in one window: 5 WARNINGs one by one, then, when
    serve() ends, one line counting the other 7."""
    lines = []
    while not records.empty():
        lines.append(records.get_nowait())
    ended = [r for r in lines if "the handler of a client of" in r.getMessage()]
    assert len(ended) == 5 and all(r.levelno == logging.WARNING for r in ended)
    [summary] = [r for r in lines if "not logged one by one" in r.getMessage()]
    assert summary.levelno == logging.WARNING
    assert summary.getMessage().startswith(f"{url}: 7 more handlers ended by an error in the")
    assert summary.getMessage().endswith(": 7 ended by RemoteProtocolError")


def test_blocking_handler_ends_are_logged_boundedly(
    tmp_path: Path, records: queue.Queue[logging.LogRecord]
) -> None:
    def handler(ch: Channel) -> None:
        raise ipcwire.RemoteProtocolError(f"{ch.url}: {ch.recv(timeout=10)!r} is not welcome")

    with ipcwire.listen(f"unix://{tmp_path}/b.sock") as lst:
        t = threading.Thread(target=lst.serve, args=(handler,))
        t.start()
        _failing_clients(lst.url, 12)
    t.join(10)
    _bounded(records, lst.url)


def test_asyncio_handler_ends_are_logged_boundedly(
    tmp_path: Path, records: queue.Queue[logging.LogRecord]
) -> None:
    async def handler(ch: AioChannel) -> None:
        raise ipcwire.RemoteProtocolError(f"{ch.url}: {await ch.recv(timeout=10)!r} not welcome")

    async def main() -> str:
        async with await aio.listen(f"unix://{tmp_path}/a.sock") as lst:
            serving = asyncio.ensure_future(lst.serve(handler))
            await asyncio.to_thread(_failing_clients, lst.url, 12)
        await serving
        return lst.url

    _bounded(records, asyncio.run(main()))
