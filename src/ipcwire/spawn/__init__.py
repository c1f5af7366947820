"""Child processes over stdin/stdout: :func:`spawn` (the parent) and :func:`stdio` (the child).

Both are also ``ipcwire.spawn`` / ``ipcwire.stdio``; :func:`close_all` closes many children
together (one shutdown ladder for all). Asyncio versions are in
:mod:`ipcwire.spawn.aio` (``ipcwire.aio.spawn``). They share the ``pipe`` mechanism's
capabilities (``ipcwire.pipe.SPEC``): reliable, ordered, both ways, same machine.
"""

from __future__ import annotations

from ipcwire.spawn.blocking import SpawnChannel, close_all, spawn, stdio, stdio_channel

__all__ = ["SpawnChannel", "close_all", "spawn", "stdio", "stdio_channel"]
