"""The file spool: ``spool:///dir``, a durable queue in a directory that survives crashes.

No server, no daemon: producers and consumers are any processes that can open the directory.
Producers write a temporary file, fsync it and rename it into place, so a message is either
wholly there or not at all; consumers claim a message by renaming it, so two consumers never
get the same one; a message is removed only when acknowledged, and a claim whose consumer died
(even by kill -9) goes back to the queue: at-least-once delivery, FIFO per producer. Waiting
uses inotify (``inotify_simple``) where it can, polling otherwise.

Also here: :class:`FileLock`, ``flock`` locks that name their holder when busy.
"""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec
from ipcwire.spool._flock import FileLock, LockHolder, lock_holders

__all__ = ["BENCH_URL", "SPEC", "FileLock", "LockHolder", "lock_holders"]

BENCH_FRAMING = "one file per message"  # ipcwire bench --list

SPEC = MechanismSpec(
    scheme="spool",
    query_options=(
        "mode",
        "fsync",
        "lease",
        "max_attempts",
        "reap_interval",
        "poll_interval",
        "watch",
    ),
    title="File spool",
    summary="durable queue in a directory: atomic rename, at-least-once, survives kill -9",
    capabilities=Capabilities(
        bidirectional=False,  # one shared queue: what you send, any consumer may take
        reliable=True,
        ordered=True,  # FIFO per producer (with one consumer; several share the work)
        message_boundaries=True,
        durable=True,
        end_of_channel=False,  # a producer closing does not end the queue for consumers
        multi_client=False,  # no connections: every process opens the same directory
        platforms=("linux", "darwin", "freebsd"),
    ),
    blocking="ipcwire.spool.blocking",
    aio="ipcwire.spool.aio",
    docs="docs/mechanisms/spool.md",
    example_url="spool:///var/spool/myapp",
)


def BENCH_URL(workdir: str, serial: int) -> str:
    """A fresh endpoint for one ``ipcwire bench`` measurement."""
    return f"spool://{workdir}/spool{serial}"
