"""Shared memory: ``shm://name``, lock-free ring buffers between two processes on one machine.

Each connection gets its own pair of rings (one per direction) in an anonymous memfd that the
connecting side creates and hands over the listener's Unix socket; the socket then stays open
only as the liveness signal, so a peer that dies is noticed at once and nothing is left behind
(no /dev/shm entry, ever). Zero-copy both ways: ``loan``/``send_loan`` and ``recv_view``.
Blocked calls spin, park in the kernel, or spin then park (``policy=``). The ring is C (the
optional extension); ``IMPLEMENTATION`` says whether it or the pure-Python fallback runs.
docs/mechanisms/shm.md explains the layout, the wait policies and when not to use it.
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING, Any

from ipcwire.registry import Capabilities, MechanismSpec
from ipcwire.shm._pybase import TSO_MACHINES
from ipcwire.shm._ring import IMPLEMENTATION

if TYPE_CHECKING:
    from ipcwire.shm._aio_channel import AioShmChannel
    from ipcwire.shm.blocking import ShmChannel

__all__ = [
    "BENCH_FRAMING",
    "BENCH_OVERHEAD",
    "IMPLEMENTATION",
    "SPEC",
    "AioShmChannel",
    "ShmChannel",
    "probe",
]


def __getattr__(name: str) -> Any:
    """The channel classes, for type checkers (``loan()``, ``loaned()``, ``recv_view()`` are
    theirs, not every channel's), imported on first use: the registry imports this module."""
    if name == "ShmChannel":
        from ipcwire.shm.blocking import ShmChannel

        return ShmChannel
    if name == "AioShmChannel":
        from ipcwire.shm._aio_channel import AioShmChannel

        return AioShmChannel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# for ``ipcwire bench``'s framing column: each message is one ring record
BENCH_FRAMING = "16-byte record header (padded to 16)"
BENCH_OVERHEAD = 16

SPEC = MechanismSpec(
    scheme="shm",
    query_options=("capacity", "policy", "spin_us"),
    title="Shared memory",
    summary=(
        "lock-free rings in a memfd per connection; zero-copy loans and views; "
        "spin/park/hybrid waits"
    ),
    capabilities=Capabilities(
        bidirectional=True,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        zero_copy=True,
        multi_client=True,
        peer_credentials=True,
        tells_failure=True,
        wait_policies=("spin", "park", "hybrid"),
        platforms=("linux",),
    ),
    blocking="ipcwire.shm.blocking",
    aio="ipcwire.shm.aio",
    docs="docs/mechanisms/shm.md",
    example_url="shm://app",
)


def probe() -> str | None:
    """Why shared memory cannot work on this machine, or None when it can (for
    ``ipcwire platforms``). ``IMPLEMENTATION`` says which ring runs."""
    if not hasattr(os, "memfd_create") or not hasattr(os, "eventfd"):
        return "needs Linux's memfd_create and eventfd"
    try:
        os.close(os.memfd_create("ipcwire-probe", os.MFD_CLOEXEC))
    except OSError as exc:
        return f"memfd_create fails here ({exc.strerror}): a seccomp or container policy?"
    if IMPLEMENTATION == "python" and platform.machine().lower() not in TSO_MACHINES:
        return (
            f"the C extension is not built, and the pure-Python ring needs x86 memory "
            f"ordering (this is {platform.machine()}): reinstall with a C compiler"
        )
    return None
