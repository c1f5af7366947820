"""The client side of the connection handshake over a blocking byte stream (the I/O-free
protocol is ``ipcwire._core.handshake``; docs/protocol.md describes it)."""

from __future__ import annotations

import time

from ipcwire._core.framing import LengthPrefixDecoder, NdjsonDecoder
from ipcwire._core.handshake import HANDSHAKE_MAX_FRAME
from ipcwire._core.wire import WireFormat
from ipcwire._oserror import translate
from ipcwire._stream.transport import ByteStream, SocketStream
from ipcwire.errors import (
    ChannelBroken,
    FrameTooLarge,
    IpcwireError,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.options import ChannelOptions

__all__ = ["client_handshake", "silent_server"]

_monotonic = time.monotonic


def silent_server(
    url: str, waited: float, options: ChannelOptions, *, in_this_process: bool = False
) -> Timeout:
    """The Timeout of a client whose connection was taken but whose handshake got no answer
    (both drivers): a peer that is not an ipcwire endpoint (an HTTP server, say) is the
    likeliest reason, and a stopped or overloaded one the other. ``in_this_process``: the
    server is an asyncio listener of this very process, whose event loop the blocking
    connect() itself keeps from running."""
    if in_this_process:
        return Timeout(
            f"{url} took the connection but did not complete the ipcwire handshake within "
            f"{waited:.3g} s: the server is in this process: its event loop cannot run while "
            f"this blocking connect() waits; use ipcwire.aio.connect() in the loop, or run "
            f"the server in another thread/process",
            endpoint=url,
        )
    return Timeout(
        f"{url} took the connection but did not complete the ipcwire handshake within "
        f"{waited:.3g} s: is it an ipcwire endpoint, with the same framing= on both sides? "
        f"(an ipcwire server that is stopped or overloaded does this too)"
        + ("; does the server use a token too?" if options.token else ""),
        endpoint=url,
    )


def _ours(stream: ByteStream) -> bool:
    """Whether the peer is an asyncio listener of this very process."""
    sock = stream.sock if isinstance(stream, SocketStream) else None
    if sock is None:
        return False
    try:
        peer = sock.getpeername()
    except OSError:
        return False
    from ipcwire._stream.aio_listener import listens_in_this_process  # (asyncio: when needed)

    return listens_in_this_process(peer)


def client_handshake(
    stream: ByteStream, options: ChannelOptions, deadline: float, *, goodbye: bool = False
) -> tuple[WireFormat, LengthPrefixDecoder | NdjsonDecoder]:
    """Run the client handshake on a freshly connected stream.

    Returns the wire format (send limit set from the server's) and the decoder, which may
    already hold the first messages the server sent. ``goodbye``: offer to end the channel
    with a goodbye frame (the decoder's ``goodbye`` says whether the server agreed).

    Raises:
        AuthenticationFailed, HandshakeError, PermissionDenied, RemoteProtocolError,
        Timeout, ChannelBroken.
    """
    wire = options.wire()
    dec = wire.decoder()
    hs = options.client_handshake(goodbye=goodbye)
    if not hs.needed:
        return wire, dec
    url = options.url
    budget = max(deadline - _monotonic(), 0.0)  # for the message: timeout= may cut it short
    dec.max_frame = HANDSHAKE_MAX_FRAME
    try:
        try:
            stream.send_all(hs.hello(), max(deadline - _monotonic(), 0.001))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused at once: its reason is waiting to be read below
        while True:
            frame = dec.next_frame()
            if frame is None:
                wait = deadline - _monotonic()
                if wait <= 0:
                    raise TimeoutError
                n = stream.recv_into(dec.get_buffer(), wait)
                if n == 0:
                    raise ChannelBroken(
                        f"{url} closed the connection during the handshake: it is not an "
                        f"ipcwire endpoint with framing={options.framing!r}, or it refused "
                        f"this process (see its log)",
                        endpoint=url,
                    )
                dec.buffer_updated(n)
                continue
            try:
                step = hs.receive(frame)
            except IpcwireError:
                if hs.farewell:  # why this client leaves, for the server's log
                    try:
                        stream.send_all(hs.farewell, 0.1)
                    except OSError:
                        pass
                raise
            if step.send:
                stream.send_all(step.send, max(deadline - _monotonic(), 0.001))
            if step.done:
                break
    except FrameTooLarge:
        raise RemoteProtocolError(
            f"{url} answered the handshake with something that is not ipcwire "
            f"(framing={options.framing!r})",
            endpoint=url,
        ) from None
    except (BlockingIOError, TimeoutError) as exc:
        raise silent_server(url, budget, options, in_this_process=_ours(stream)) from exc
    except OSError as exc:
        raise translate(exc, url, "handshaking with") from exc
    dec.max_frame = options.max_frame
    wire.send_limit = hs.peer_max_frame
    if hs.goodbye and isinstance(dec, LengthPrefixDecoder):
        dec.goodbye = True
    return wire, dec
