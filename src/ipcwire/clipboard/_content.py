"""What goes on the clipboard for a message, and the message for what is on it (both drivers)."""

from __future__ import annotations

from typing import Any

from ipcwire._core.wire import WireFormat
from ipcwire.errors import FrameTooLarge

__all__ = ["decode", "encode"]


def encode(wire: WireFormat, obj: Any, text: bool, url: str) -> bytes:
    """What goes on the clipboard for ``obj``.

    Raises:
        FrameTooLarge, LocalProtocolError.
    """
    data = obj.encode() if text and isinstance(obj, str) else bytes(wire.codec.encode(obj))
    if len(data) > wire.max_frame:
        raise FrameTooLarge(
            f"message of {len(data)} bytes not copied to {url}: over max_frame={wire.max_frame}",
            size=len(data),
            limit=wire.max_frame,
            endpoint=url,
        )
    return data


def decode(wire: WireFormat, data: bytes, text: bool) -> Any:
    """The message for clipboard content ``data``."""
    if text:
        return data.decode(errors="replace")
    return wire.decode(memoryview(data))
