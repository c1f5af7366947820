"""A listener nobody accepts from holds at most ``backlog`` connections set up (each one is
about ten descriptors and a mapping on the listener's side); the clients behind them wait in
the kernel's backlog, as with ``unix://``, instead of costing the listener without bound."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout

BACKLOG = 3
LATE = 0.3  # the handshake timeout of a client that must not get through


def _memfd_maps() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if "memfd:ipcwire-shm" in line)


def test_blocking_listener_sets_up_at_most_backlog_unaccepted(shm_url: Callable[[], str]) -> None:
    url = shm_url()
    with ipcwire.listen(url, backlog=BACKLOG) as listener:
        clients = [ipcwire.connect(url, capacity="4K", timeout=5) for _ in range(BACKLOG)]
        try:
            maps = _memfd_maps()
            with pytest.raises(Timeout):
                clients.append(ipcwire.connect(url, capacity="4K", timeout=LATE))
            assert _memfd_maps() == maps  # the listener mapped nothing more
            with listener.accept(timeout=5) as first:  # room for one more
                # (whichever client's setup finished first: set up in parallel, they are
                # accepted in the order they became ready, not the order they connected)
                for i, ch in enumerate(clients):
                    ch.send(b"%d" % i)
                assert first.recv(timeout=5) in {b"%d" % i for i in range(BACKLOG)}
                clients.append(ipcwire.connect(url, capacity="4K", timeout=5))
                second, third = listener.accept(timeout=5), listener.accept(timeout=5)
                with second, third, listener.accept(timeout=5) as last:
                    clients[-1].send(b"last")
                    assert last.recv(timeout=5) == b"last"
        finally:
            for ch in clients:
                ch.close()


def test_asyncio_listener_sets_up_at_most_backlog_unaccepted(
    shm_url: Callable[[], str], aio_run: AioRun
) -> None:
    url = shm_url()

    async def main() -> None:
        async with await aio.listen(url, backlog=BACKLOG) as listener:
            clients = [await aio.connect(url, capacity="4K", timeout=5) for _ in range(BACKLOG)]
            try:
                maps = _memfd_maps()
                fds = len(os.listdir("/proc/self/fd"))
                with pytest.raises(Timeout):
                    clients.append(await aio.connect(url, capacity="4K", timeout=LATE))
                assert _memfd_maps() == maps
                # at most the one connection it took off the socket, held before its setup
                assert len(os.listdir("/proc/self/fd")) <= fds + 1
                first = await listener.accept(timeout=5)
                async with first:
                    for i, ch in enumerate(clients):  # (accepted in the order set up: any)
                        await ch.send(b"%d" % i)
                    assert await first.recv(timeout=5) in {b"%d" % i for i in range(BACKLOG)}
                    clients.append(await aio.connect(url, capacity="4K", timeout=5))
                    for _ in range(BACKLOG - 1):
                        await (await listener.accept(timeout=5)).aclose()
                    async with await listener.accept(timeout=5) as last:
                        await clients[-1].send(b"last")
                        assert await last.recv(timeout=5) == b"last"
            finally:
                for ch in clients:
                    await ch.aclose()

    aio_run(main())


def test_a_silent_client_does_not_hold_a_backlog_of_one(shm_url: Callable[[], str]) -> None:
    url = shm_url()
    with ipcwire.listen(url, backlog=1) as listener:
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.connect(url.removeprefix("shm://"))
        try:
            with ipcwire.connect(url, timeout=5) as c, listener.accept(timeout=5) as s:
                c.send(b"through")
                assert s.recv(timeout=5) == b"through"
        finally:
            silent.close()


def test_asyncio_a_silent_client_does_not_hold_a_backlog_of_one(
    shm_url: Callable[[], str], aio_run: AioRun
) -> None:
    url = shm_url()

    async def main() -> None:
        async with await aio.listen(url, backlog=1) as listener:
            silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            silent.connect(url.removeprefix("shm://"))
            try:
                c = await aio.connect(url, timeout=5)
                async with c, await listener.accept(timeout=5) as s:
                    await c.send(b"through")
                    assert await s.recv(timeout=5) == b"through"
            finally:
                silent.close()

    aio_run(main())


def test_a_burst_of_clients_is_set_up_no_further_than_the_backlog(
    shm_url: Callable[[], str],
) -> None:
    """Clients connecting at once all passed the acceptor's room check before any of their
    setups had finished, so all of them were set up, past the backlog. A setup now takes its
    place among the backlog after the handshake, before the rings cost anything."""
    url = shm_url()
    with ipcwire.listen(url, backlog=BACKLOG) as listener:
        results: list[object] = []
        lock = threading.Lock()

        def one() -> None:
            try:
                ch: object = ipcwire.connect(url, capacity="4K", timeout=2)
            except Timeout as exc:
                ch = exc
            with lock:
                results.append(ch)

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        connected = [ch for ch in results if isinstance(ch, ipcwire.Channel)]
        try:
            assert len(results) == 12
            assert len(connected) == BACKLOG, [type(r).__name__ for r in results]
            for _ in range(BACKLOG):
                listener.accept(timeout=5).close()
        finally:
            for ch in connected:
                ch.close()


def test_asyncio_a_burst_of_clients_is_set_up_no_further_than_the_backlog(
    shm_url: Callable[[], str], aio_run: AioRun
) -> None:
    """As on the blocking listener: each setup waited only for the acceptor's room check."""
    url = shm_url()

    async def one() -> object:
        try:
            return await aio.connect(url, capacity="4K", timeout=2)
        except Timeout as exc:
            return exc

    async def main() -> None:
        async with await aio.listen(url, backlog=BACKLOG) as listener:
            results = await asyncio.gather(*(one() for _ in range(12)))
            connected = [ch for ch in results if isinstance(ch, aio.AioChannel)]
            try:
                assert len(connected) == BACKLOG, [type(r).__name__ for r in results]
                for _ in range(BACKLOG):
                    (await listener.accept(timeout=5)).close()
            finally:
                for ch in connected:
                    await ch.aclose()

    aio_run(main())
