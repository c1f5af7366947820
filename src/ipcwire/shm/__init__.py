"""Shared memory: ``shm://name``, lock-free ring buffers between two processes.

``IMPLEMENTATION`` says which ring runs here: ``"c"`` (the extension) or ``"python"``.
"""

from __future__ import annotations

from ipcwire.shm._ring import IMPLEMENTATION

__all__ = ["IMPLEMENTATION"]
