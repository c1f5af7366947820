"""Build the shared :class:`StreamProtocol` for a pipe channel, with a future for readiness."""

from __future__ import annotations

import asyncio

from ipcwire._core.handshake import ClientHandshake, ServerHandshake
from ipcwire._stream.aio import AioStreamChannel
from ipcwire._stream.aio_protocol import StreamProtocol
from ipcwire.errors import IpcwireError
from ipcwire.options import ChannelOptions

__all__ = ["make_protocol"]


def make_protocol(
    ch: AioStreamChannel, options: ChannelOptions, *, role: str | None
) -> tuple[StreamProtocol, asyncio.Future[None]]:
    """The protocol feeding ``ch``; ``role`` ("client"/"server") runs the token handshake,
    None skips it. The future completes when the channel is ready (or the handshake failed).
    """
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def ready(_: AioStreamChannel) -> None:
        if not done.done():
            done.set_result(None)

    def failed(err: IpcwireError) -> None:
        if not done.done():
            done.set_exception(err)

    hs: ClientHandshake | ServerHandshake | None = None
    if role == "client":
        hs = options.client_handshake()
    elif role == "server":
        hs = options.server_handshake()
    proto = StreamProtocol(ch, hs, ready, failed, handshake_timeout=options.handshake_timeout)
    return proto, done
