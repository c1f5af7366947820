"""What goes on the clipboard for a message, and the message for what is on it (both drivers)."""

from __future__ import annotations

from typing import Any

from ipcwire._core.codecs import encoder_for
from ipcwire._core.wire import WireFormat
from ipcwire.errors import FrameTooLarge, LocalProtocolError

__all__ = ["decode", "encode"]


def encode(wire: WireFormat, obj: Any, text: bool, url: str) -> bytes:
    """What goes on the clipboard for ``obj``.

    Raises:
        FrameTooLarge, LocalProtocolError.
    """
    if text and isinstance(obj, str):
        try:
            data = obj.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate ("\udc80") is not UTF-8
            raise LocalProtocolError(
                f"cannot copy this str to the clipboard as UTF-8: {exc} (not sent to {url}); "
                f"remove the lone surrogates, or send bytes with text=False",
                endpoint=url,
            ) from exc
    else:
        data = bytes(encoder_for(wire.codec, url)(obj))
    if len(data) > wire.max_frame:
        raise FrameTooLarge(
            f"message of {len(data)} bytes not copied to {url}: over max_frame={wire.max_frame}",
            size=len(data),
            limit=wire.max_frame,
            endpoint=url,
        )
    return data


def decode(wire: WireFormat, data: bytes, text: bool, url: str) -> Any:
    """The message for clipboard content ``data``.

    Raises:
        FrameTooLarge: over max_frame (the content is skipped: the next change comes next).
        RemoteProtocolError: it does not decode with the codec.
    """
    if len(data) > wire.max_frame:
        raise FrameTooLarge(
            f"the clipboard's content at {url} ({len(data)} bytes) is over max_frame="
            f"{wire.max_frame}; it was skipped (raise max_frame= to take it)",
            size=len(data),
            limit=wire.max_frame,
            endpoint=url,
        )
    if text:
        return data.decode(errors="replace")
    return wire.decode(memoryview(data))
