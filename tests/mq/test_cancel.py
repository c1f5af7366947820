"""A large message's send stopped part-way by something other than its timeout (asyncio
cancellation, an exception in the sending thread): the receiver must never get the pieces
sent so far glued to the next message."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, EndOfChannel
from ipcwire.mq.aio import AioMqChannel
from ipcwire.mq.blocking import MqChannel

BIG = b"B" * 10_000  # ten pieces of 1 KiB; the peer's queue holds two
OUT_OF_STEP = "the queue is out of step, so open a new channel"


def test_asyncio_send_cancelled_part_way_never_corrupts_the_next_message(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url("maxmsg=2&msgsize=1024")

    async def main() -> None:
        async with await aio.listen(url) as listener:
            client = await aio.connect(url, timeout=10)
            assert isinstance(client, AioMqChannel)
            server = await listener.accept(timeout=10)
            async with client, server:
                sending = asyncio.create_task(client.send(BIG))
                while not client._swaiters:  # two pieces in, waiting for room for the third
                    await asyncio.sleep(0)
                sending.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await sending
                got: list[bytes] = []

                async def receive() -> None:
                    try:
                        while True:
                            got.append(await server.recv(timeout=10))
                    except ChannelBroken:
                        pass  # "ended in the middle of a message": fine
                    except EndOfChannel:
                        pass

                receiving = asyncio.create_task(receive())
                try:
                    await client.send(b"small", timeout=10)
                except ChannelBroken as exc:
                    assert OUT_OF_STEP in str(exc)  # refused: fine
                await client.aclose()
                await receiving
                assert all(m in (BIG, b"small") for m in got), [len(m) for m in got]

    asyncio.run(main())


class _Interrupted(Exception):
    pass


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted


def test_blocking_send_interrupted_part_way_never_corrupts_the_next_message(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url("maxmsg=2&msgsize=1024")
    with ipcwire.listen(url) as listener:
        accepted: list[Any] = []
        t = threading.Thread(target=lambda: accepted.append(listener.accept(timeout=10)))
        t.start()
        client = ipcwire.connect(url, timeout=10)
        assert isinstance(client, MqChannel)
        t.join()
        with client, accepted[0] as server:
            main = threading.get_ident()

            def interrupt_when_full() -> None:
                guard = time.monotonic() + 10
                while client._out.current_messages < 2 and time.monotonic() < guard:
                    time.sleep(0.001)  # polls a condition; the send below waits for room
                signal.pthread_kill(main, signal.SIGUSR1)

            old = signal.signal(signal.SIGUSR1, _interrupt)
            try:
                kicker = threading.Thread(target=interrupt_when_full)
                kicker.start()
                with pytest.raises(_Interrupted):
                    client.send(BIG, timeout=10)  # two pieces go, then it waits
                kicker.join()
            finally:
                signal.signal(signal.SIGUSR1, old)
            got: list[bytes] = []

            def receive() -> None:
                try:
                    while True:
                        got.append(server.recv(timeout=10))
                except (ChannelBroken, EndOfChannel):
                    pass

            reader = threading.Thread(target=receive)
            reader.start()
            try:
                client.send(b"small", timeout=10)
            except ChannelBroken as exc:
                assert OUT_OF_STEP in str(exc)  # refused: fine
            client.close()
            reader.join(20)
            assert all(m in (BIG, b"small") for m in got), [len(m) for m in got]
