"""Connected mq channel pairs and queue filling, for the tests that close or fail a channel
whose peer's queue is full (test_close_full_queue.py, test_failure.py)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout
from ipcwire.mq.aio import AioMqChannel
from ipcwire.mq.blocking import MqChannel

__all__ = ["SIZE", "afill", "apair", "fill", "msg", "pair"]

SIZE = 8000  # one kernel message (msgsize 8 KiB); the queues hold 10


def msg(i: int) -> bytes:
    return bytes([i % 256]) * SIZE


def pair(url: str) -> tuple[Any, MqChannel, MqChannel]:
    """A listener on ``url``, a client and the listener's channel to it."""
    listener = ipcwire.listen(url)
    try:
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(listener.accept(timeout=10)))
        t.start()
        client = ipcwire.connect(url, timeout=10)
        t.join()
    except BaseException:
        listener.close()
        raise
    assert isinstance(client, MqChannel) and isinstance(box[0], MqChannel)
    return listener, client, box[0]


async def apair(url: str) -> tuple[Any, AioMqChannel, AioMqChannel]:
    """:func:`pair`, asyncio."""
    listener = await aio.listen(url)
    try:
        accepting = asyncio.ensure_future(listener.accept(timeout=10))
        client = await aio.connect(url, timeout=10)
        server = await accepting
    except BaseException:
        listener.close()
        raise
    assert isinstance(client, AioMqChannel) and isinstance(server, AioMqChannel)
    return listener, client, server


def fill(ch: MqChannel) -> int:
    """Send until the peer's queue is full; how many went."""
    n = 0
    while True:
        try:
            ch.send(msg(n), timeout=0)
        except Timeout:
            return n
        n += 1


async def afill(ch: AioMqChannel) -> int:
    """:func:`fill`, asyncio."""
    n = 0
    while True:
        try:
            await ch.send(msg(n), timeout=0)
        except Timeout:
            return n
        n += 1
