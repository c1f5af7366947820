"""An asyncio shm:// listener the program drops without close() is collected and closed, as
the blocking one and the asyncio unix/tcp ones are since 7b28f13: a ResourceWarning
"unclosed listener 'URL': ...", its socket file removed, its acceptor task ended, and the
next listen() at that name works; nothing is left in /dev/shm or /tmp/ipcwire-UID.

Before, its acceptor task ran a method of the listener, so the loop kept the listener alive
for ever: ``await (await aio.listen(url)).accept(timeout=0.5)`` in a notebook cell left the
socket file, and every later listen() there was AddressInUse naming this very process."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import warnings

from tests._aio_listeners import held_listener_warnings, lose_listener, until
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.shm._naming import socket_path

_n = itertools.count()


def _url() -> str:
    return f"shm://h149a{os.getpid()}n{next(_n)}"


def _shm_names() -> set[str]:
    """ipcwire's names in /dev/shm, but those the other pytest worker's tests make there at
    the same time (mq's lock files and end pipes, the bench's raw ring; doctor's psm_*)."""
    return {
        n
        for n in os.listdir("/dev/shm")
        if n.startswith("ipcwire") and not n.startswith(("ipcwire-mq.", "ipcwire-rawshm-"))
    }


def _others() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


def test_dropped_aio_listener_is_closed(aio_run: AioRun) -> None:
    url = _url()
    path = socket_path(parse_url(url))
    before = _shm_names()

    async def main() -> list[str]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            await lose_listener(url)
            assert os.path.exists(path)
            gc.collect()
        assert await until(lambda: not os.path.exists(path)), "its socket file stayed"
        assert await until(lambda: not _others()), _others()  # its acceptor task ended
        async with await aio.listen(url) as again:  # the name is free again
            client = await aio.connect(url, timeout=5)
            async with client, await again.accept(timeout=5) as server:
                await client.send(b"after")
                assert await server.recv(timeout=5) == b"after"
        return [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]

    said = aio_run(main())
    assert any(s.startswith(f"unclosed listener {url!r}") for s in said), said
    assert not os.path.exists(path)
    assert _shm_names() <= before, _shm_names() - before


def test_dropped_after_its_loop_closed(aio_run: AioRun) -> None:
    """A listener that outlives its loop (asyncio.run() returned) is closed when collected,
    and a blocking listen() at its name works."""
    url = _url()
    path = socket_path(parse_url(url))
    kept: list[object] = []

    async def main() -> None:
        kept.append(await aio.listen(url))

    aio_run(main())
    assert os.path.exists(path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        kept.clear()
        gc.collect()
    said = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert any(s.startswith(f"unclosed listener {url!r}") for s in said), said
    assert not os.path.exists(path)
    with (
        ipcwire.listen(url) as again,
        ipcwire.connect(url, timeout=5) as client,
        again.accept(timeout=5) as server,
    ):
        client.send(b"after")
        assert server.recv(timeout=5) == b"after"


def test_held_aio_listener_is_not_closed(aio_run: AioRun) -> None:
    """Only a dropped listener goes: one the program holds keeps listening through
    collections, and close() gives no warning."""
    url = _url()

    assert aio_run(held_listener_warnings(url)) == []
    assert not os.path.exists(socket_path(parse_url(url)))
