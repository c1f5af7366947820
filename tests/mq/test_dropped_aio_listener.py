"""An asyncio mq:// listener the program drops without close() is collected and closed, as
the blocking one and the asyncio unix/tcp ones are since 7b28f13: a ResourceWarning
"unclosed listener 'URL': ...", its queue and lock file removed, the loop no longer watching
it, and the next listen() at that name works.

Before, the loop's reader on its queue was a bound method of the listener, so the loop kept
the listener alive for ever: ``await (await aio.listen(url)).accept(timeout=0.5)`` in a
notebook cell left the queue, and every later listen() there was AddressInUse naming this
very process."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable

import posix_ipc
import pytest
from tests._aio_listeners import held_listener_warnings, lose_listener, until
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.errors import EndOfChannel
from ipcwire.mq._rendezvous import lock_path


def _queue_exists(name: str) -> bool:
    try:
        posix_ipc.MessageQueue(name).close()
    except posix_ipc.ExistentialError:
        return False
    return True


def _gone(name: str) -> bool:
    return not _queue_exists(name) and not os.path.exists(lock_path(name))


def test_dropped_aio_listener_is_closed(mq_url: Callable[..., str], aio_run: AioRun) -> None:
    url = mq_url()
    name = url.removeprefix("mq://")

    async def main() -> list[str]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            await lose_listener(url)
            assert _queue_exists(name)
            gc.collect()
        assert await until(lambda: _gone(name)), "its queue or lock file stayed"
        async with await aio.listen(url) as again:  # the name is free again
            client = await aio.connect(url, timeout=5)
            async with client, await again.accept(timeout=5) as server:
                await client.send(b"after")
                assert await server.recv(timeout=5) == b"after"
        return [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]

    said = aio_run(main())
    assert any(s.startswith(f"unclosed listener {url!r}") for s in said), said
    assert _gone(name)


def test_dropped_while_a_client_waits(mq_url: Callable[..., str], aio_run: AioRun) -> None:
    """Dropped with a client answered and not accepted: the client's channel ends, and the
    next listener serves a new client."""
    url = mq_url()
    name = url.removeprefix("mq://")

    async def main() -> None:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            listener = await aio.listen(url)
            client = await aio.connect(url, timeout=5)  # answered by the loop, not accepted
            del listener
            gc.collect()
            assert await until(lambda: _gone(name)), "its queue or lock file stayed"
            with pytest.raises(EndOfChannel):  # (nobody will accept it: cut off)
                await client.recv(timeout=5)
            await client.aclose()
        async with await aio.listen(url) as again:
            other = await aio.connect(url, timeout=5)
            async with other, await again.accept(timeout=5) as server:
                await other.send(b"after")
                assert await server.recv(timeout=5) == b"after"

    aio_run(main())


def test_dropped_after_its_loop_closed(mq_url: Callable[..., str], aio_run: AioRun) -> None:
    """A listener that outlives its loop (asyncio.run() returned) is closed when collected,
    and a blocking listen() at its name works."""
    url = mq_url()
    name = url.removeprefix("mq://")
    kept: list[object] = []

    async def main() -> None:
        kept.append(await aio.listen(url))

    aio_run(main())
    assert _queue_exists(name)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        kept.clear()
        gc.collect()
    said = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert any(s.startswith(f"unclosed listener {url!r}") for s in said), said
    assert _gone(name)
    with (
        ipcwire.listen(url) as again,
        ipcwire.connect(url, timeout=5) as client,
        again.accept(timeout=5) as server,
    ):
        client.send(b"after")
        assert server.recv(timeout=5) == b"after"


def test_held_aio_listener_is_not_closed(mq_url: Callable[..., str], aio_run: AioRun) -> None:
    """Only a dropped listener goes: one the program holds keeps answering through
    collections, and close() gives no warning."""
    url = mq_url()

    assert aio_run(held_listener_warnings(url)) == []
