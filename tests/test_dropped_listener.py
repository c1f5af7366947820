"""A listener the program drops without close() is collected and closed, as a dropped spawn
channel is: a ResourceWarning, its socket file (or queue) removed, its thread ended, and the
next listen() at the same address works.

Before, its acceptor thread ran a bound method of the listener and so kept it alive for ever:
``ipcwire.listen(url).accept(timeout=0.5)`` in a notebook cell left the socket file, the queue
or the port, and the next ``listen()`` there raised AddressInUse naming this very process.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import warnings
from pathlib import Path

import pytest
from tests._aio_listeners import lose_listener
from tests._proc import wait_until

import ipcwire
from ipcwire import aio
from ipcwire.errors import AddressInUse, Timeout


def _free_tcp_url() -> str:
    with ipcwire.listen("tcp://127.0.0.1:0") as probe:
        return probe.url


def _urls(tmp_path: Path) -> dict[str, str]:
    tag = f"h{os.getpid()}d"
    return {
        "unix": f"unix://{tmp_path}/dropped.sock",
        "tcp": _free_tcp_url(),
        "shm": f"shm://{tag}",
        "mq": f"mq:///{tag}",
    }


def _lose(url: str) -> None:
    """The notebook cell: listen, wait for a client that never comes, keep nothing."""
    try:
        ipcwire.listen(url).accept(timeout=0.05)
    except Timeout:
        pass


def _threads(url: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith(url)]


@pytest.mark.parametrize("kind", ["unix", "tcp", "shm", "mq"])
def test_dropped_blocking_listener_is_closed(kind: str, tmp_path: Path) -> None:
    url = _urls(tmp_path)[kind]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _lose(url)
        gc.collect()
    said = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert any(s.startswith(f"unclosed listener {url!r}") for s in said), said
    assert wait_until(lambda: not _threads(url), 5), _threads(url)
    if kind == "unix":
        assert not os.path.exists(url.removeprefix("unix://"))
    # the address is free: listen there again, and a client gets through
    with (
        ipcwire.listen(url) as again,
        ipcwire.connect(url, timeout=5) as client,
        again.accept(timeout=5) as server,
    ):
        client.send(b"after")
        assert server.recv(timeout=5) == b"after"


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_dropped_asyncio_listener_is_closed(kind: str, tmp_path: Path) -> None:
    url = _urls(tmp_path)[kind]

    async def main() -> list[str]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            await lose_listener(url)
            gc.collect()
        await asyncio.sleep(0)  # (its close runs at the loop's next turn)
        async with await aio.listen(url) as again:
            client = await aio.connect(url, timeout=5)
            async with client, await again.accept(timeout=5) as server:
                await client.send(b"after")
                assert await server.recv(timeout=5) == b"after"
        return [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]

    said = asyncio.run(main())
    assert any(s.startswith(f"unclosed listener {url!r}") for s in said), said


def test_held_listener_is_not_closed(tmp_path: Path) -> None:
    """Only the listener the program dropped goes: one it holds keeps listening through
    collections, and is closed by close() without a warning."""
    url = f"unix://{tmp_path}/held.sock"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        listener = ipcwire.listen(url)
        gc.collect()
        with ipcwire.connect(url, timeout=5) as client, listener.accept(timeout=5) as server:
            client.send(b"x")
            assert server.recv(timeout=5) == b"x"
        listener.close()
        del listener
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]
    assert wait_until(lambda: not _threads(url), 5)


@pytest.mark.parametrize("kind", ["unix", "tcp", "shm"])
def test_listening_twice_in_one_process_says_so(kind: str, tmp_path: Path) -> None:
    """Before: "pid N (this program) is listening there. Stop it, or choose another path"."""
    url = _urls(tmp_path)[kind]
    with ipcwire.listen(url), pytest.raises(AddressInUse) as info:
        ipcwire.listen(url)
    assert str(info.value) == (
        f"cannot listen at {url}: this process already listens at {url} (a listener you "
        "still hold, or one you lost without closing it): close it first"
    )
    assert info.value.pid == os.getpid()


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_aio_listening_twice_in_one_process_says_so(kind: str, tmp_path: Path) -> None:
    url = _urls(tmp_path)[kind]

    async def main() -> str:
        async with await aio.listen(url):
            with pytest.raises(AddressInUse) as info:
                await aio.listen(url)
        return str(info.value)

    assert "this process already listens at" in asyncio.run(main())
