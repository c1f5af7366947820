"""An mq channel dropped without close() tells its peer at once, as a dropped socket does.

Before, a dropped channel closed only its eventfd: its peer, whose process was alive, went
on waiting, and kept the two queues (and a serve() handler thread) until the dropping
process exited; a few such channels used up the user's RLIMIT_MSGQUEUE, and every other mq
client of that user was refused with ResourceExhausted. Now the peer's recv() raises
ChannelBroken naming the drop, and the queues are released.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import ipcwire
from ipcwire import aio


def _queue_fds() -> set[int]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/iwt"):
                found.add(int(fd))
        except OSError:
            pass
    return found


def _pair(url: str, listener: Any) -> tuple[Any, Any]:
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(listener.accept(timeout=10)))
    t.start()
    client = ipcwire.connect(url, timeout=10)
    t.join()
    return client, box[0]


@pytest.mark.parametrize("dropped", ["client", "server"])
def test_the_peer_of_a_dropped_blocking_channel_is_told(
    mq_url: Callable[..., str], dropped: str
) -> None:
    url = mq_url()
    with ipcwire.listen(url) as listener:
        before = _queue_fds()
        client, server = _pair(url, listener)
        gone, peer = (client, server) if dropped == "client" else (server, client)
        gone.send(b"last")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            del gone, client, server
            gc.collect()
        assert peer.recv(timeout=10) == b"last"  # what it sent first is delivered
        started = time.monotonic()
        with pytest.raises(ipcwire.ChannelBroken, match="dropped without close"):
            peer.recv(timeout=10)
        assert time.monotonic() - started < 5  # at once, not at a timeout
        peer.close()
        assert _queue_fds() - before == set()
        assert any("unclosed mq channel" in str(w.message) for w in caught)


def test_the_peer_of_a_dropped_asyncio_channel_is_told(mq_url: Callable[..., str]) -> None:
    url = mq_url()

    async def main() -> None:
        async with await aio.listen(url) as listener:
            before = _queue_fds()
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            client = await aio.connect(url, timeout=10)
            server = await accepting
            await client.send(b"last")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del client
                gc.collect()
            assert await server.recv(timeout=10) == b"last"
            started = time.monotonic()
            with pytest.raises(ipcwire.ChannelBroken, match="dropped without close"):
                await server.recv(timeout=10)
            assert time.monotonic() - started < 5
            await server.aclose()
            assert _queue_fds() - before == set()

    asyncio.run(main())
