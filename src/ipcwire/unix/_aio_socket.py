"""Connecting a unix socket on an event loop while the listener's backlog is full.

``loop.sock_connect`` takes the EAGAIN of a full backlog for "in progress": it waits for a
writable socket and hands over one that never connected (ENOTCONN on first use). A full backlog
is a busy server, as a TCP SYN queue is: try again, as the blocking connect does
(:func:`ipcwire.unix._socket.connect_when_room`), until the caller's timeout ends it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from ipcwire.unix._socket import backlog_delays, is_backlog_full

__all__ = ["aio_connect_when_room"]


async def aio_connect_when_room(
    sock: socket.socket, sockaddr: str | bytes, busy: Callable[[], object] | None = None
) -> None:
    """Connect the non-blocking unix ``sock``; ``busy()`` each time the backlog was full (so
    that the caller's timeout can say why it passed)."""
    loop = asyncio.get_running_loop()
    delays = backlog_delays()
    while True:
        try:
            sock.connect(sockaddr)  # a unix connect does not wait
            return
        except BlockingIOError as exc:
            if not is_backlog_full(exc):  # in progress (not on Linux): wait for it
                await loop.sock_connect(sock, sockaddr)
                return
        if busy is not None:
            busy()
        await asyncio.sleep(next(delays))  # nothing to wait on: until the timeout ends this
