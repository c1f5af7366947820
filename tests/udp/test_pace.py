"""asyncio udp: a task sending in a loop lets the other tasks of its loop run.

A datagram send never waits (no backpressure: the kernel drops what a receiver has no room
for), so ``await ch.send()`` in a loop never gave the event loop back: a receiver on the same
loop, or any other task, stood still until the loop ended (a probe of close() racing sends
hung here). Now every 64th send lets the loop run once. Counted, not timed
(tests/_loops.TurnCounter).
"""

from __future__ import annotations

import asyncio

from tests._loops import TurnCounter

from ipcwire import aio

SENDS = 1000


async def _turns_while_sending(send_to_peer: bool) -> int:
    async with (
        await aio.listen("udp://127.0.0.1:0") as lst,
        await aio.connect(lst.url, timeout=10) as ch,
    ):
        await ch.send(b"hello")
        peer = await lst.accept(timeout=10)
        await peer.recv(timeout=10)
        async with TurnCounter() as counter:
            for _ in range(SENDS):
                if send_to_peer:
                    await peer.send(b"x")  # the listener's channel to a client
                else:
                    await ch.send(b"x")
            seen = counter.turns
        await peer.aclose()
    return seen


def test_a_sending_loop_gives_the_event_loop_turns() -> None:
    # before: 0 turns in 1000 sends (every await completed without suspending)
    assert asyncio.run(_turns_while_sending(False)) >= SENDS // 64 - 1


def test_a_listener_channel_sending_loop_gives_the_event_loop_turns() -> None:
    assert asyncio.run(_turns_while_sending(True)) >= SENDS // 64 - 1
