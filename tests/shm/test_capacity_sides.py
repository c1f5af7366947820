"""Ring sizes are the connecting side's choice, per direction, and each side is told what it
can do about a loan too large for its ring.

``listen("shm://...", capacity="16M")`` was accepted and ignored; a listener that sent 4 MiB
loans then got FrameTooLarge with the hint "connect with a larger capacity=", which a listener
cannot do; and connect took one size for both directions, so big frames one way and small
results back mapped two big rings per worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import ipcwire
import ipcwire.aio
from ipcwire.errors import ConfigurationError, FrameTooLarge

from .test_failure import pair

M = 1 << 20


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_listen_refuses_capacity_and_says_who_chooses(shm_url: Callable[[], str], api: str) -> None:
    url = shm_url()
    with pytest.raises(ConfigurationError) as info:
        if api == "blocking":
            ipcwire.listen(url, capacity="16M")
        else:

            async def main() -> None:
                await ipcwire.aio.listen(url, capacity="16M")

            asyncio.run(main())
    text = str(info.value)
    assert "connecting side chooses" in text
    assert "connect()" in text and "capacity=('64K', '16M')" in text


def test_a_capacity_in_the_urls_query_is_left_to_the_connecting_side(
    shm_url: Callable[[], str],
) -> None:
    """One URL for both sides: the listener takes it and the client's capacity applies."""
    url = shm_url() + "?capacity=64K,16M"
    with (
        ipcwire.listen(url) as lst,
        ipcwire.connect(url, timeout=10) as client,
        lst.accept(timeout=10) as server,
    ):
        assert client.capacity == (64 << 10, 16 * M)  # type: ignore[attr-defined]
        assert server.capacity == (16 * M, 64 << 10)  # type: ignore[attr-defined]


@pytest.mark.parametrize("capacity", [("64K", "16M"), ["64K", 16 * M], "64K,16M"])
def test_connect_sizes_each_direction(shm_url: Callable[[], str], capacity: Any) -> None:
    with pair(shm_url(), capacity=capacity) as (client, server):
        assert client.capacity == (64 << 10, 16 * M)
        assert server.capacity == (16 * M, 64 << 10)
        with server.loaned(8 * M) as buf:  # a big frame from the server...
            buf[:8] = b"frame..."
        assert bytes(client.recv_view(timeout=10)[:8]) == b"frame..."
        client.release_view()
        client.send(b"small result")  # ...a small one back
        assert server.recv(timeout=10) == b"small result"


@pytest.mark.parametrize("capacity", [("64K",), ("64K", "1M", "1M"), ("64K", "3M"), "1M,x"])
def test_a_bad_pair_is_refused(shm_url: Callable[[], str], capacity: Any) -> None:
    with pytest.raises(ConfigurationError):
        ipcwire.connect(shm_url(), capacity=capacity)


def test_asyncio_connect_sizes_each_direction(shm_url: Callable[[], str]) -> None:
    async def main() -> tuple[Any, Any]:
        async with await ipcwire.aio.listen(shm_url()) as lst:
            client = await ipcwire.aio.connect(lst.url, timeout=10, capacity=("16K", "4M"))
            async with client, await lst.accept(timeout=10) as server:
                return client.capacity, server.capacity  # type: ignore[attr-defined]

    assert asyncio.run(main()) == ((16 << 10, 4 * M), (4 * M, 16 << 10))


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_loan_over_the_ring_says_what_each_side_can_do(
    shm_url: Callable[[], str], api: str
) -> None:
    """The listener cannot choose its ring: its hint is the client's capacity= to ask for;
    the client's hint is its own capacity=, with the other direction kept."""
    errors: dict[str, FrameTooLarge] = {}
    if api == "blocking":
        with pair(shm_url()) as (client, server):
            for side, ch in (("server", server), ("client", client)):
                with pytest.raises(FrameTooLarge) as info:
                    ch.loan(4 * M)
                errors[side] = info.value
                with pytest.raises(FrameTooLarge), ch.loaned(4 * M):
                    pass
                ch.send(b"still usable")
    else:

        async def main() -> None:
            async with await ipcwire.aio.listen(shm_url()) as lst:
                client = await ipcwire.aio.connect(lst.url, timeout=10)
                async with client, await lst.accept(timeout=10) as server:
                    for side, ch in (("server", server), ("client", client)):
                        with pytest.raises(FrameTooLarge) as info:
                            await ch.loan(4 * M)  # type: ignore[attr-defined]
                        errors[side] = info.value
                        await ch.send(b"still usable")

        asyncio.run(main())
    server_text, client_text = str(errors["server"]), str(errors["client"])
    for exc in errors.values():
        assert (exc.size, exc.limit) == (4 * M, M - 16)
        assert "send(), which splits long messages" in str(exc)
    assert "connect with" not in server_text.partition("client must")[0]
    assert "the client must connect with" in server_text
    assert "capacity=('1M', '8M') (to the server, from the server)" in server_text
    assert "connect with a larger ring to the server: capacity=('8M', '1M')" in client_text
