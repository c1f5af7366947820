"""The contenders that ship with ipcwire: raw baselines, ipcwire's mechanisms, the peers.

Mechanism authors add a raw baseline or a peer by calling
:func:`ipcwire.bench.register_contender` in a module listed in :data:`CONTENDER_MODULES`
(imported before each run); ipcwire's own rows come from the mechanism registry by themselves.
"""

from __future__ import annotations

import importlib
from typing import Final

from ipcwire.bench.builtin.iceoryx import ICEORYX2
from ipcwire.bench.builtin.mechanisms import mechanism_contenders
from ipcwire.bench.builtin.peers import PEERS
from ipcwire.bench.builtin.pipes import pipe_contenders
from ipcwire.bench.builtin.raw import RAW_TCP, RAW_TCP_BATCHED, RAW_UNIX, RAW_UNIX_BATCHED
from ipcwire.bench.builtin.raw_aio import (
    RAW_AIO_TCP,
    RAW_AIO_TCP_BATCHED,
    RAW_AIO_UNIX,
    RAW_AIO_UNIX_BATCHED,
)
from ipcwire.bench.contender import Contender, contenders

__all__ = ["CONTENDER_MODULES", "all_contenders"]

# Modules that call register_contender() when imported (baselines and peers of later
# mechanisms). A module that is missing is skipped with a note.
CONTENDER_MODULES: Final[tuple[str, ...]] = (
    "ipcwire.http._bench",  # raw/http, raw/http/asyncio: aiohttp + httpx without ipcwire
    "ipcwire.grpc._bench",  # raw/grpc, raw/grpc/asyncio: grpcio without ipcwire
    "ipcwire.ws._bench",  # raw/ws, raw/ws+unix (blocking, asyncio): websockets without ipcwire
    "ipcwire.mq._bench",  # raw/mq, raw/mq/asyncio: posix_ipc used directly
    "ipcwire.spool._bench",  # raw/spool: plain files, write + fsync + rename
    "ipcwire.spawn._bench",  # raw/spawn: a child's stdin/stdout pipes with a length prefix
    "ipcwire.fifo._bench",  # raw/fifo: two FIFOs with a length prefix
    "ipcwire.udp._bench",  # raw/udp: a plain UDP socket
    "ipcwire.dbus._bench",  # raw/dbus: dbus-fast method calls without ipcwire
    "ipcwire.clipboard._bench",  # raw/clipboard: xclip without ipcwire
    "ipcwire.sse._bench",  # raw/sse+http: aiohttp streaming without ipcwire
    "ipcwire.shm._bench",  # a pure-Python mmap ring, iceoryx2 round trips, shm loans
)

BASELINES: Final = (
    RAW_UNIX,
    RAW_UNIX_BATCHED,
    RAW_AIO_UNIX,
    RAW_AIO_UNIX_BATCHED,
    RAW_TCP,
    RAW_TCP_BATCHED,
    RAW_AIO_TCP,
    RAW_AIO_TCP_BATCHED,
)


def all_contenders(notes: list[str]) -> list[Contender]:
    """Every contender known in this process, in table order: baselines, ipcwire, peers,
    then registered ones. Problems that keep one from being listed are added to ``notes``."""
    for module in CONTENDER_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # a missing library is the mechanism's own note
            notes.append(f"contender module {module} not loaded: {exc}")
        except Exception as exc:  # a broken module must not stop the benchmark
            notes.append(f"contender module {module} failed to load: {type(exc).__name__}: {exc}")
    found: dict[str, Contender] = {}
    rows = (*BASELINES, *mechanism_contenders(notes), *pipe_contenders(notes), *PEERS, ICEORYX2)
    for c in (*rows, *contenders()):
        found.setdefault(c.id, c)
    return list(found.values())
