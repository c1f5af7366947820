"""Helpers of the ``idle_timeout`` tests (test_idle.py, test_idle_aio.py).

Every wait there ends on the event itself (a recv raising EndOfChannel, a thread joining); a
small ``idle_timeout`` keeps them short. Where time must pass without reading a listener's
socket, another listener's peer ending is the clock.
"""

from __future__ import annotations

from typing import Any

import pytest

import ipcwire
from ipcwire.errors import EndOfChannel

__all__ = ["GAP", "IDLE", "SEND_IDLE", "channels", "idle_clock"]

IDLE = 0.2


def channels(lst: Any) -> dict[Any, Any]:
    return lst._peers  # type: ignore[no-any-return]


def idle_clock(idle: float = IDLE) -> None:
    """Return once ``idle`` seconds have passed (at least), reading no other socket: a peer
    of a listener of its own ends."""
    with (
        ipcwire.listen("udp://127.0.0.1:0", idle_timeout=idle) as lst,
        ipcwire.connect(lst.url) as c,
    ):
        c.send(b"tick")
        with lst.accept(timeout=5) as ch:
            assert ch.recv(timeout=5) == b"tick"
            with pytest.raises(EndOfChannel):
                ch.recv(timeout=30)


# A send while a recv waits: ch's first idle end < the clock's end < ch's end after the send,
# each GAP apart (the clock's peer is admitted GAP after ch's last activity, and GAP before the
# send; a client's recv timing out spaces them, without touching ch).
GAP = 0.1
SEND_IDLE = 0.4
