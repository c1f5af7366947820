"""ipcwire's handshake as shared memory runs it, for both drivers: always length-framed (the
rings keep message boundaries), before the rings are set up (``_link.py``)."""

from __future__ import annotations

from ipcwire._core.handshake import ClientHandshake, ServerHandshake
from ipcwire.options import ChannelOptions

__all__ = ["client_hs", "server_hs"]


def client_hs(options: ChannelOptions) -> ClientHandshake:
    """ipcwire's handshake, always length-framed here (rings keep message boundaries)."""
    return ClientHandshake(
        codec=options.codec.name,
        framing="length",
        max_frame=options.max_frame,
        token=options.token,
        endpoint=options.url,
    )


def server_hs(options: ChannelOptions) -> ServerHandshake:
    """The listening side of the same handshake."""
    return ServerHandshake(
        codec=options.codec.name,
        framing="length",
        max_frame=options.max_frame,
        token=options.token,
        endpoint=options.url,
    )
