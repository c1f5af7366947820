"""A gRPC client channel dropped without close() while the server keeps its end open is
closed as close() closes it, with a ``ResourceWarning``, as unix, tcp, spawn and mq do.

Before, grpcio's writer thread (iterating the channel's outgoing stream), the reader pump and
the call's done callback (asyncio: the call's callback and ipcwire's tasks) held the channel:
dropped, it was never collected, nothing warned, and the RPC, its threads and buffers stayed
until the server ended the call; the server's ``recv()`` waited for ever (its timeout here).
Now the application holds a channel of its own, apart from what grpcio holds.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
import weakref

import pytest
from tests._proc import wait_until

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, EndOfChannel

BOUND = 10.0


@pytest.mark.parametrize("received", [False, True])
def test_blocking_client_dropped_while_the_server_reads(received: bool) -> None:
    with ipcwire.listen("grpc://127.0.0.1:0", codec="json") as srv:
        before = set(threading.enumerate())
        c = ipcwire.connect(srv.url, codec="json", timeout=BOUND)
        p = srv.accept(timeout=BOUND)
        c.send({"n": 1})
        p.send({"n": 2})
        assert p.recv(timeout=BOUND) == {"n": 1}
        if received:  # the reader pump is running too
            assert c.recv(timeout=BOUND) == {"n": 2}
        c.close()  # (a closed one first: the listener's pool thread, the watchdog's)
        p.close()

        c = ipcwire.connect(srv.url, codec="json", timeout=BOUND)
        p = srv.accept(timeout=BOUND)
        c.send({"n": 1})
        p.send({"n": 2})
        assert p.recv(timeout=BOUND) == {"n": 1}
        if received:
            assert c.recv(timeout=BOUND) == {"n": 2}
        ended: list[BaseException] = []

        def handler() -> None:  # the server keeps its end open, in recv()
            try:
                p.recv(timeout=BOUND)
            except BaseException as exc:
                ended.append(exc)

        t = threading.Thread(target=handler)
        t.start()
        ref = weakref.ref(c)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            del c
            gc.collect()
        _warned(seen, srv.url)
        del seen  # (a recorded warning holds its source, the channel)
        gc.collect()
        assert ref() is None
        t.join(BOUND)
        assert len(ended) == 1 and isinstance(ended[0], EndOfChannel | ChannelBroken), ended
        p.close()
        assert wait_until(lambda: not _left(before), BOUND), _left(before)


def _left(before: set[threading.Thread]) -> list[str]:
    """The threads started since ``before`` but the listener's pool and the watchdog."""
    gc.collect()
    return [
        t.name
        for t in threading.enumerate()
        if t not in before and not t.name.startswith(("ipcwire-grpc", "ipcwire watchdog"))
    ]


def test_asyncio_client_dropped_while_the_server_reads() -> None:
    async def main() -> None:
        srv = await aio.listen("grpc://127.0.0.1:0", codec="json")
        try:
            c = await aio.connect(srv.url, codec="json", timeout=BOUND)
            p = await srv.accept(timeout=BOUND)
            await c.send({"n": 1})
            await p.send({"n": 2})
            assert await p.recv(timeout=BOUND) == {"n": 1}
            assert await c.recv(timeout=BOUND) == {"n": 2}  # its reader task runs
            await c.aclose()
            await p.aclose()
            tasks = len(asyncio.all_tasks())

            c = await aio.connect(srv.url, codec="json", timeout=BOUND)
            p = await srv.accept(timeout=BOUND)
            await c.send({"n": 1})
            await p.send({"n": 2})
            assert await p.recv(timeout=BOUND) == {"n": 1}
            got = await c.recv(timeout=BOUND)  # (not in an assert: pytest's keeps `c`)
            assert got == {"n": 2}
            reading = asyncio.ensure_future(p.recv(timeout=BOUND))
            ref = weakref.ref(c)
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                del c
                gc.collect()
            _warned(seen, srv.url)
            del seen  # (a recorded warning holds its source, the channel)
            gc.collect()
            assert ref() is None
            with pytest.raises((EndOfChannel, ChannelBroken)):
                await reading
            await p.aclose()
            deadline = asyncio.get_running_loop().time() + BOUND
            while len(asyncio.all_tasks()) > tasks:  # the client's linger task ends, bounded
                assert asyncio.get_running_loop().time() < deadline, asyncio.all_tasks()
                await asyncio.sleep(0.01)
        finally:
            await srv.aclose()

    asyncio.run(main())


def _warned(seen: list[warnings.WarningMessage], url: str) -> None:
    texts = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert any(t.startswith(f"unclosed gRPC channel {url!r}") for t in texts), texts
