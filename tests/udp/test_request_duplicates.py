"""request() over udp with a network that duplicates and reorders replies.

A datagram carries no request id (the datagram is the message: see udp.md), so request() is
"send, take the next datagram". Before, one duplicated reply shifted every later request by
one: each got the reply to the request before it, without an error (a walkthrough through a
proxy duplicating 20% of datagrams: 90 of 100 replies were another request's). Now
request() first discards what the peer sent before it (counted in statistics().dropped).

The network is a proxy here: a thread with two UDP sockets between the client and an
ipcwire listener, duplicating each reply at once, or holding the copy back until after
the next reply (reordered). The test waits until the proxy has sent what it will for a
request before the next one, as a network's duplicate arrives while the client works.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

import pytest
from tests._loops import AioRun
from tests._proc import wait_until

import ipcwire
from ipcwire import aio

N = 20


class Proxy:
    """client <-> front | back <-> server; every reply comes twice ("dup": at once;
    "reorder": the copy after the next reply)."""

    def __init__(self, server: tuple[str, int], mode: str) -> None:
        self.mode = mode
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.back.connect(server)
        self.wake_r, self.wake_w = socket.socketpair()
        self.client: tuple[str, int] | None = None
        self.held: bytes | None = None
        self.to_client = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.front.getsockname()[1]}"

    def _reply(self, data: bytes) -> None:
        assert self.client is not None
        self.front.sendto(data, self.client)
        if self.mode == "dup":
            self.front.sendto(data, self.client)
            self.to_client += 2
            return
        if self.held is not None:  # the previous reply's copy, after this reply
            self.front.sendto(self.held, self.client)
            self.to_client += 1
        self.held = data
        self.to_client += 1

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self.front, self.back, self.wake_r], [], [])
            if self.wake_r in ready:
                return
            if self.front in ready:
                data, addr = self.front.recvfrom(65536)
                self.client = addr
                self.back.send(data)
            if self.back in ready:
                self._reply(self.back.recv(65536))

    def sent_for(self, i: int) -> int:
        """What the proxy has sent the client once request ``i`` (from 0) is answered."""
        return 2 * (i + 1) if self.mode == "dup" else 2 * i + 1


@contextlib.contextmanager
def network(mode: str) -> Iterator[Proxy]:
    """An echo server (ipcwire listener, blocking, in a thread) behind a proxy."""
    with ipcwire.listen("udp://127.0.0.1:0", codec="json") as server:

        def echo() -> None:
            with server.accept(timeout=10) as ch:
                for _ in range(N):
                    ch.send(ch.recv(timeout=10))

        t = threading.Thread(target=echo)
        t.start()
        proxy = Proxy(server.local_address, mode)  # type: ignore[attr-defined]
        proxy.thread.start()
        try:
            yield proxy
        finally:
            t.join(15)
            proxy.wake_w.send(b"x")
            proxy.thread.join(5)
            for s in (proxy.front, proxy.back, proxy.wake_r, proxy.wake_w):
                s.close()


@pytest.mark.parametrize("mode", ["dup", "reorder"])
def test_duplicated_replies_blocking(mode: str) -> None:
    with network(mode) as proxy, ipcwire.connect(proxy.url, codec="json") as ch:
        for i in range(N):
            assert ch.request({"i": i}, timeout=5) == {"i": i}
            assert wait_until(lambda i=i: proxy.to_client >= proxy.sent_for(i))
        # every copy but those still to come was discarded, and counted
        assert ch.statistics().dropped == (N - 1 if mode == "dup" else N - 2)


@pytest.mark.parametrize("mode", ["dup", "reorder"])
def test_duplicated_replies_asyncio(mode: str, aio_run: AioRun) -> None:
    async def main(proxy: Proxy) -> int:
        async with await aio.connect(proxy.url, codec="json") as ch:
            for i in range(N):
                assert await ch.request({"i": i}, timeout=5) == {"i": i}
                assert wait_until(lambda i=i: proxy.to_client >= proxy.sent_for(i))
            return ch.statistics().dropped

    with network(mode) as proxy:
        assert aio_run(main(proxy)) == (N - 1 if mode == "dup" else N - 2)


def test_the_pages_id_matching_example_skips_late_copies() -> None:
    """udp.md's call(): with ids, even a copy that arrives after the next request was sent
    (what request() cannot tell from the reply) is skipped."""
    import re
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs/mechanisms/udp.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "def call" in b)
    ns: dict[str, object] = {}
    exec(code, ns)  # the page's own example
    call = ns["call"]
    with network("reorder") as proxy, ipcwire.connect(proxy.url, codec="json") as ch:
        for i in range(N):  # no wait for the proxy here: the late copies come when they come
            assert call(ch, i, timeout=5) == i  # type: ignore[operator]
