"""The read size of asyncio's stream and datagram transports, kept under malloc's mmap
threshold.

asyncio's selector transports read with ``recv(max_size)`` (256 KiB), for a protocol that is
not a ``BufferedProtocol``: the bytes are allocated at that size, then shrunk to what came.
256 KiB is over glibc malloc's mmap threshold (128 KiB until the process happens to free a
larger block, which raises it), so in the usual heap state every read was an mmap, page
faults, an mremap and an munmap: about 28 us of a 35 us receive, measured on a UDP round
trip, and a WebSocket receive on TCP 53 us where the same over a Unix socket (whose heap
happened to avoid it) took 21 us. ipcwire's own stream drivers read into their decoder's
buffer (``BufferedProtocol``); the transports of the libraries it drives (websockets), of its
asyncio streams (the SSE client) and of its datagram endpoints read at most
:data:`READ_SIZE` (udp: 64 KiB, more than any datagram). The http mechanism's aiohttp server
and httpx client are left as they are (httpx's transport is three libraries deep): a request
there costs ~0.9 ms in one loop, of which these mappings ~30 us.
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = ["READ_SIZE", "bound_reads"]

# Under the threshold with the bytes object's header and malloc's own (128 KiB = 131072).
READ_SIZE: Final = 127 * 1024


def bound_reads(transport: asyncio.BaseTransport, size: int = READ_SIZE) -> None:
    """Make ``transport`` read at most ``size`` bytes at a time, if it is one of the
    selector event loop's (another loop, uvloop say, reads its own way)."""
    if isinstance(getattr(transport, "max_size", None), int):
        setattr(transport, "max_size", size)  # noqa: B010 - not in asyncio's types
