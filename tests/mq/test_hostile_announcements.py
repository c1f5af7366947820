"""Whatever another process writes into a listener's queue, accept() keeps serving the real
clients: a bad announcement is dropped (logged), never raised out of accept()."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.mq.blocking import MessageQueue, MqListener


def _announcements(base: str) -> list[bytes]:
    hello = {"ipcwire": 1, "codec": "bytes", "framing": "length", "max_frame": 1 << 20}

    def ann(**kw: Any) -> bytes:
        msg = {"ipcwire_mq": 1, "pid": 1, "up": f"{base}.x.up", "dn": f"{base}.x.dn"}
        msg["hello"] = hello
        msg.update(kw)
        return json.dumps(msg).encode()

    return [
        # queues that exist, so the listener gets as far as watching the pid; no such pid
        # can exist (pidfd_open overflows)
        ann(pid=2**40, up=f"{base}.real.up", dn=f"{base}.real.dn"),
        ann(pid=-7),
        ann(pid=0),
        ann(up=f"{base}.\u0000.up", dn=f"{base}.\u0000.dn"),  # a NUL in the name
        ann(up=f"{base}." + "x" * 300 + ".up", dn=f"{base}." + "x" * 300 + ".dn"),
        b"\xff\xfe garbage",
        b'{"ipcwire_mq": "\xb2"}',  # JSON, with a string that is not UTF-8
    ]


@contextmanager
def _real_pair(base: str) -> Iterator[None]:
    """The queues one bad announcement names, created for it; removed afterwards."""
    qs = [MessageQueue.create(f"{base}.real.{end}") for end in ("up", "dn")]
    try:
        yield
    finally:
        for q in qs:
            q.unlink()
            q.close()


@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_bad_announcements_do_not_stop_accept(mq_url: Callable[..., str], driver: str) -> None:
    url = mq_url("backlog=10")
    if driver == "blocking":
        with ipcwire.listen(url) as listener:
            assert isinstance(listener, MqListener)
            name = listener.queue.name
            with _real_pair(name):
                with MessageQueue.open(name) as q:
                    for data in _announcements(name):
                        q.send(data, timeout=5)
                box: list[Any] = []
                t = threading.Thread(target=lambda: box.append(ipcwire.connect(url, timeout=10)))
                t.start()
                try:
                    with listener.accept(timeout=10) as server:
                        t.join()
                        with box[0] as client:
                            client.send(b"ping")
                            assert server.recv(timeout=10) == b"ping"
                finally:
                    t.join()
    else:

        async def main() -> None:
            async with await aio.listen(url) as listener:
                name = listener._q.name  # type: ignore[attr-defined]
                with _real_pair(name):
                    with MessageQueue.open(name) as q:
                        for data in _announcements(name):
                            q.send(data, timeout=5)
                    connecting = asyncio.create_task(aio.connect(url, timeout=10))
                    server = await listener.accept(timeout=10)
                    async with server, await connecting as client:
                        await client.send(b"ping")
                        assert await server.recv(timeout=10) == b"ping"

        asyncio.run(main())
