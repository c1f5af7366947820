"""What a send says once receiving has met the end of the peer's stream (both drivers).

A peer that was killed, failed, or closed the channel reads nothing more, but the kernel
does not always say so at the next write: a TCP socket whose peer is gone accepts one more
write (the peer's answer, a reset, comes back later), so that message was lost without an
error. Once the receiving side knows the end, every later send raises this instead, in the
same words on the blocking and asyncio APIs.

An end of stream with no goodbye on a channel that does not exchange goodbyes (NDJSON
framing, a peer in another language) may be a half-close (``nc -N``, a client that ends its
input and then reads the reply): sending goes on there, until the kernel reports the peer
gone.
"""

from __future__ import annotations

import copy

from ipcwire._core.framing import LengthPrefixDecoder, NdjsonDecoder
from ipcwire.errors import ChannelBroken, IpcwireError

__all__ = ["closed_by_peer", "fresh", "send_error_after_end"]


def fresh(exc: IpcwireError) -> IpcwireError:
    """A copy of a kept error, to raise. Raising the kept object itself gives it a traceback
    whose frames hold the channel that keeps it: a reference cycle, so a closed channel (and
    its receive buffer) lived until the cycle collector ran. The copy keeps the message, the
    attributes and the cause."""
    new = copy.copy(exc)
    new.__cause__ = exc.__cause__
    new.__suppress_context__ = exc.__suppress_context__
    return new


def send_error_after_end(
    end: IpcwireError, dec: LengthPrefixDecoder | NdjsonDecoder, url: str
) -> ChannelBroken | None:
    """The error every send raises once receiving from ``url`` raised ``end`` (what
    :func:`ipcwire._core.ending.end_error` made of ``dec``), or None while the peer may
    still read (a plain end of stream: a half-close)."""
    if isinstance(end, ChannelBroken):
        return ChannelBroken(
            f"cannot send to {url}: the channel is broken ({end}); nothing more can be sent, "
            f"so open a new channel",
            endpoint=url,
        )
    if dec.goodbye and dec.ended == "" and not dec.buffered:
        return closed_by_peer(url)
    return None


def closed_by_peer(url: str) -> ChannelBroken:
    """What a send says to a peer that closed the channel cleanly (its goodbye came)."""
    return ChannelBroken(
        f"cannot send to {url}: it closed the channel, so it reads nothing more; open a "
        f"new channel to send to it again",
        endpoint=url,
    )
