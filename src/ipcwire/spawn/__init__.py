"""Child processes over stdin/stdout: :func:`spawn` (the parent) and :func:`stdio` (the child).

Both are also ``ipcwire.spawn`` / ``ipcwire.stdio``; asyncio versions are in
:mod:`ipcwire.spawn.aio` (``ipcwire.aio.spawn``). They share the ``pipe`` mechanism's
capabilities (``ipcwire.pipe.SPEC``): reliable, ordered, both ways, same machine.
"""

from __future__ import annotations

from ipcwire.spawn.blocking import SpawnChannel, spawn, stdio, stdio_channel

__all__ = ["SpawnChannel", "spawn", "stdio", "stdio_channel"]
