"""The token handshake over a pair of fds (blocking).

Pipes, FIFOs and a child's stdio carry no handshake by default, so that plain programs in
any language can be the peer. With ``token=`` both sides run ipcwire's handshake (the
``client`` role on the side that started the conversation: the parent, or the end that
connects), and both prove they know the token without sending it.
"""

from __future__ import annotations

import time

from ipcwire._core.framing import LengthPrefixDecoder, NdjsonDecoder
from ipcwire._core.handshake import HANDSHAKE_MAX_FRAME
from ipcwire._core.wire import WireFormat
from ipcwire._oserror import translate
from ipcwire._stream.handshake import client_handshake
from ipcwire._stream.transport import ByteStream
from ipcwire.errors import ChannelBroken, FrameTooLarge, RemoteProtocolError, Timeout
from ipcwire.options import ChannelOptions

__all__ = ["fd_handshake"]

Decoder = LengthPrefixDecoder | NdjsonDecoder


def fd_handshake(
    stream: ByteStream, options: ChannelOptions, *, client: bool
) -> tuple[WireFormat, Decoder]:
    """Run the handshake if ``options.token`` is set; otherwise just build the wire format.

    Raises:
        AuthenticationFailed, HandshakeError, RemoteProtocolError, Timeout, ChannelBroken.
    """
    if options.token is None:
        wire = options.wire()
        return wire, wire.decoder()
    deadline = time.monotonic() + options.handshake_timeout
    if client:
        return client_handshake(stream, options, deadline)
    return _server(stream, options, deadline)


def _server(
    stream: ByteStream, options: ChannelOptions, deadline: float
) -> tuple[WireFormat, Decoder]:
    url = options.url
    wire = options.wire()
    dec = wire.decoder()
    hs = options.server_handshake()
    dec.max_frame = HANDSHAKE_MAX_FRAME
    try:
        while True:
            frame = dec.next_frame()
            if frame is None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise TimeoutError
                n = stream.recv_into(dec.get_buffer(), wait)
                if n == 0:
                    raise ChannelBroken(
                        f"{url}: the peer closed before the handshake finished (does it use "
                        f"the same token?)",
                        endpoint=url,
                    )
                dec.buffer_updated(n)
                continue
            step = hs.receive(frame)
            if step.send:
                stream.send_all(step.send, max(deadline - time.monotonic(), 0.001))
            if step.error is not None:
                raise step.error
            if step.done:
                break
    except FrameTooLarge:
        raise RemoteProtocolError(
            f"{url}: the peer sent something that is not an ipcwire handshake", endpoint=url
        ) from None
    except (BlockingIOError, TimeoutError) as exc:
        raise Timeout(
            f"{url}: no handshake within {options.handshake_timeout} s; does the peer use "
            f"token= too?",
            endpoint=url,
        ) from exc
    except OSError as exc:
        raise translate(exc, url, "handshaking with") from exc
    dec.max_frame = options.max_frame
    wire.send_limit = hs.peer_max_frame
    return wire, dec
