"""A listener serving clients that come and go keeps nothing of the ones that left.

``serve()`` runs a handler per client (a thread, or a task with asyncio); when the client
closes, the handler's iteration ends, and its thread or task, the channel, and every
descriptor and helper thread the mechanism opened for it must go. A server that runs for
weeks sees millions of clients: anything kept per client is a leak (a probe of every
mechanism found the udp listener keeping a thread and a channel per client that ever sent;
its peers now end after ``idle_timeout``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel

CLIENTS = 15


def _name() -> str:
    return f"ipcwsl-{uuid.uuid4().hex[:10]}"


URLS: dict[str, Callable[[Path], str]] = {
    "unix": lambda d: f"unix://{d}/u.sock",
    "tcp": lambda d: "tcp://127.0.0.1:0",
    "shm": lambda d: f"shm://{_name()}",
    "mq": lambda d: f"mq://{_name()}",
    "ws": lambda d: "ws://127.0.0.1:0/x",
    "ws+unix": lambda d: f"ws+unix://{d}/w.sock",
    "http": lambda d: "http://127.0.0.1:0/x",
    "http+unix": lambda d: f"http+unix://{d}/h.sock",
    "grpc": lambda d: "grpc://127.0.0.1:0",
    "grpc+unix": lambda d: f"grpc+unix://{d}/g.sock",
    # UDP cannot tell that a client left: its handler ends once the peer was silent this long
    "udp": lambda d: "udp://127.0.0.1:0?idle_timeout=0.2",
}


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fds_back_to(count: int) -> bool:
    """Whether the descriptors drop back to ``count`` within a few seconds. Some servers
    close a finished connection in their own thread or loop, a moment after the handler
    returned, and nothing tells when: polled, briefly."""
    deadline = time.monotonic() + 10
    while _fds() > count:
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.01)
    return True


def _per_client(threads: set[threading.Thread]) -> list[str]:
    """Threads started since ``threads`` that are not a bounded pool's: the blocking grpc
    server's workers (``ipcwire-grpc_N``, at most its max_workers, kept for reuse)."""
    return [t.name for t in set(threading.enumerate()) - threads if "ipcwire-grpc_" not in t.name]


def _ours(task: asyncio.Task[object]) -> bool:
    """Not grpc.aio's server task that waits for the next call (one, renewed every call)."""
    return "AioServer._request_call" not in repr(task)


class _Handlers:
    """Counts the handlers that started and the ones that returned."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.started = self.ended = 0

    def enter(self) -> None:
        with self.cond:
            self.started += 1

    def leave(self) -> None:
        with self.cond:
            self.ended += 1
            self.cond.notify_all()

    def wait_all_ended(self, expected: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.ended >= expected, 20)


@pytest.mark.parametrize("kind", sorted(URLS))
def test_blocking_serve_keeps_nothing_of_clients_that_left(kind: str, tmp_path: Path) -> None:
    handlers = _Handlers()

    def echo(ch: Channel) -> None:
        handlers.enter()
        try:
            for msg in ch:
                ch.send(msg)
        finally:
            handlers.leave()

    def client() -> None:
        with ipcwire.connect(lst.url, timeout=10) as c:
            assert c.request(b"ping", timeout=10) == b"ping"

    with ipcwire.listen(URLS[kind](tmp_path)) as lst:
        server = threading.Thread(target=lst.serve, args=(echo,), daemon=True)
        server.start()
        for _ in range(3):  # what a mechanism opens once (its pools, its loop) opens here
            client()
        assert handlers.wait_all_ended(3), "a handler did not end when its client closed"
        threads, fds = set(threading.enumerate()), _fds()
        for _ in range(CLIENTS):
            client()
        assert handlers.wait_all_ended(3 + CLIENTS), (
            f"{CLIENTS + 3 - handlers.ended} handlers still run after their clients closed"
        )
        for t in set(threading.enumerate()) - threads:  # a handler's thread ends after it
            if t.name in _per_client(threads):
                t.join(20)
        left = _per_client(threads)
        assert not left, f"threads left after {CLIENTS} clients came and went: {left}"
        assert _fds_back_to(fds), f"{_fds() - fds} descriptors more after {CLIENTS} clients"
    server.join(20)
    assert not server.is_alive()


@pytest.mark.parametrize("kind", sorted(URLS))
def test_asyncio_serve_keeps_nothing_of_clients_that_left(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        ended = asyncio.Condition()
        count = [0]

        async def echo(ch: AioChannel) -> None:
            try:
                async for msg in ch:
                    await ch.send(msg)
            finally:
                async with ended:
                    count[0] += 1
                    ended.notify_all()

        async def client() -> None:
            async with await aio.connect(lst.url, timeout=10) as c:
                assert await c.request(b"ping", timeout=10) == b"ping"

        async def all_ended(n: int) -> None:
            async with ended:
                await asyncio.wait_for(ended.wait_for(lambda: count[0] >= n), 20)

        async with await aio.listen(URLS[kind](tmp_path)) as lst:
            serving = asyncio.ensure_future(lst.serve(echo))
            for _ in range(3):
                await client()
            await all_ended(3)
            await asyncio.sleep(0)  # let the handlers' tasks finish after their last line
            tasks, threads, fds = set(asyncio.all_tasks()), set(threading.enumerate()), _fds()
            for _ in range(CLIENTS):
                await client()
            await all_ended(3 + CLIENTS)
            left = {t for t in set(asyncio.all_tasks()) - tasks if _ours(t)}
            if left:  # a task ends just after its handler: wait for exactly those
                await asyncio.wait(left, timeout=20)
            left = {t for t in set(asyncio.all_tasks()) - tasks if _ours(t) and not t.done()}
            assert not left, f"tasks left after {CLIENTS} clients came and went: {left}"
            for t in set(threading.enumerate()) - threads:
                if t.name in _per_client(threads):
                    t.join(20)
            extra = _per_client(threads)
            assert not extra, f"threads left after {CLIENTS} clients: {extra}"
            for _ in range(1000):  # (as _fds_back_to, letting the loop close what it closes)
                if _fds() <= fds:
                    break
                await asyncio.sleep(0.01)
            assert _fds() <= fds, f"{_fds() - fds} descriptors more after {CLIENTS} clients"
        await asyncio.wait_for(serving, 20)

    asyncio.run(main())


def test_blocking_serve_waits_for_busy_handlers_once_not_once_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handlers busy in their own work (not in recv, so closing their channel does not wake
    them) held serve() SERVE_JOIN_TIMEOUT each after the listener closed: 4 of them 20 s
    (helper-87's scale walkthrough). The wait is one for all of them now."""
    import ipcwire.channel as channel_module

    monkeypatch.setattr(channel_module, "SERVE_JOIN_TIMEOUT", 0.5, raising=False)
    busy = threading.Event()  # never set while serve() shuts down: the handlers stay busy
    started = threading.Semaphore(0)

    def handler(ch: Channel) -> None:
        ch.recv(timeout=10)
        started.release()
        busy.wait(30)

    lst = ipcwire.listen(f"unix://{tmp_path}/s.sock")
    server = threading.Thread(target=lst.serve, args=(handler,))
    server.start()
    clients = [ipcwire.connect(lst.url, timeout=10) for _ in range(4)]
    try:
        for ch in clients:
            ch.send(b"work")
        for _ in clients:
            assert started.acquire(timeout=10)
        began = time.monotonic()
        lst.close()
        server.join(30)
        took = time.monotonic() - began
        assert not server.is_alive()
        assert took < 1.5, took  # one 0.5 s wait; 2 s and more if each handler had its own
    finally:
        busy.set()
        for ch in clients:
            ch.close()
