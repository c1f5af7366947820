"""A peer killed while an asyncio send waits for room: ``ChannelBroken``, never a bare OSError.

The library's ``drain()`` lets the transport's error through: a probe (a child that accepts and
does not read, killed with -9 while the other side's send waited for room) got a bare
``ConnectionResetError(104)`` out of ``send()``, on the client and on the server side (the
blocking driver, and every other mechanism, said ``ChannelBroken``).
"""

from __future__ import annotations

import asyncio

import pytest
from tests._proc import child, kill9, wait_line

from ipcwire import aio
from ipcwire.errors import ChannelBroken

PEER = """
import sys, threading, ipcwire
lst = ipcwire.listen("ws://127.0.0.1:0/x")
print(lst.url, flush=True)
ch = lst.accept(timeout=30)
print("accepted", flush=True)
threading.Event().wait()  # never reads
"""


def test_a_send_waiting_on_a_killed_peer_is_channel_broken() -> None:
    with child(PEER) as proc:
        url = wait_line(proc)

        async def main() -> None:
            ch = await aio.connect(url, timeout=10)
            assert wait_line(proc) == "accepted"
            for _ in range(200):  # 1 MB sends until one waits for room (nobody reads)
                sending = asyncio.ensure_future(ch.send(b"x" * 1_000_000, timeout=60))
                done, _ = await asyncio.wait([sending], timeout=0.5)
                if not done:
                    break
                sending.result()
            assert not done, "no send ever waited"
            await asyncio.to_thread(kill9, proc)
            with pytest.raises(ChannelBroken, match=r"reset|broke|lost"):
                await asyncio.wait_for(sending, 20)
            await ch.aclose()

        asyncio.run(main())
