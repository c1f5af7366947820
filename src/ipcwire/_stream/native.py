"""The extension's stream classes (``_ext/stream.c``), or None: one choice for both drivers.

The blocking :class:`~ipcwire._stream.blocking.StreamChannel` sends and receives through
``FrameSender``/``FrameReceiver`` on a plain socket; the asyncio channel parses received
frames with ``FrameReceiver.take``. Both read the names here when a channel is made, so
setting them to None (as tests do, and as ``IPCWIRE_STREAM_IMPL=python`` does at import)
makes every new channel take the pure-Python paths.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["FRAME_RECEIVER", "FRAME_SENDER", "RECV_WITHIN", "native_stream_classes"]


def _load_native() -> tuple[Any, Any]:
    if os.environ.get("IPCWIRE_STREAM_IMPL", "").lower() == "python":
        return None, None
    try:
        from ipcwire._ext._native import FrameReceiver, FrameSender
    except ImportError:
        return None, None
    return FrameSender, FrameReceiver


# The C paths' classes, or None (then every channel uses the pure-Python paths). Tests set
# them to None to run the Python paths in the same process.
FRAME_SENDER, FRAME_RECEIVER = _load_native()


def _load_recv_within() -> Any:
    if FRAME_RECEIVER is None:
        return None
    from ipcwire._ext._native import recv_within

    return recv_within


# A timed receive on a blocking socket, as the kernel waits but signals do not restart (see
# ipcwire._stream.transport), or None: then a timed receive waits in poll().
RECV_WITHIN: Any = _load_recv_within()


def native_stream_classes() -> tuple[Any, Any]:
    """``(FrameSender, FrameReceiver)`` as this module has them now (None: Python paths)."""
    return FRAME_SENDER, FRAME_RECEIVER
