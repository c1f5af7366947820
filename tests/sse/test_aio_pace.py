"""asyncio SSE listener: a task sending in a loop lets the other tasks of its loop run.

While no client is attached (its connection dropped, it is reconnecting, or it left), a
send never waits: events go to the replay buffer. So ``await ch.send()`` in a loop never
gave the event loop back, and every other task of the loop stood still, the listener's own
HTTP server included: the client could not even come back to resume. Now every 64th send
(and every ``send_many``) lets the loop run once. Counted, not timed
(tests/_loops.TurnCounter).
"""

from __future__ import annotations

import asyncio

import pytest
from tests._loops import AioRun, TurnCounter

from ipcwire import aio
from ipcwire.sse.aio import AioSseServerChannel

URL = "sse+http://127.0.0.1:0/events"
SENDS = 1000


async def _detached(server: AioSseServerChannel) -> None:
    """Until the server has let the dropped connection go (its handler ends a few loop turns
    after the abort; nothing public to wait on: a bounded poll of loop turns)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while server.connected and loop.time() < deadline:
        await asyncio.sleep(0)
    assert not server.connected


async def _turns_while_sending(codec: str, many: bool) -> int:
    async with (
        await aio.listen(URL, codec=codec) as listener,
        await aio.connect(listener.url, codec=codec, timeout=10) as client,
    ):
        server = await listener.accept(timeout=10)
        assert isinstance(server, AioSseServerChannel)
        message = b"x" if codec == "bytes" else {"n": 1}
        await server.send(message)
        assert await client.recv(timeout=10) == message
        server.drop_connection()  # the client is away: sends never wait now
        await _detached(server)
        async with TurnCounter() as counter:
            for _ in range(SENDS // 10 if many else SENDS):
                if many:
                    await server.send_many([message] * 10)
                else:
                    await server.send(message)
            seen = counter.turns
        await server.aclose()
    return seen


@pytest.mark.parametrize("codec", ["bytes", "json"])
def test_a_sending_loop_gives_the_event_loop_turns_while_the_client_is_away(
    aio_run: AioRun, codec: str
) -> None:
    # before: 0 turns in 1000 sends (every await completed without suspending)
    assert aio_run(_turns_while_sending(codec, False)) >= SENDS // 64 - 1


def test_a_send_many_loop_gives_the_event_loop_turns(aio_run: AioRun) -> None:
    assert aio_run(_turns_while_sending("json", True)) >= SENDS // 10 - 1
