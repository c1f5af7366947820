"""The protocol of one stream connection: it runs the handshake, then feeds the connection's
bytes into its :class:`~ipcwire._stream.aio.AioStreamChannel` (see that module for flow
control)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, cast

from ipcwire._core.framing import LengthPrefixDecoder
from ipcwire._core.handshake import (
    HANDSHAKE_MAX_FRAME,
    ClientHandshake,
    ServerHandshake,
    token_mismatch,
)
from ipcwire._stream.aio import AioStreamChannel
from ipcwire.channel import PeerInfo
from ipcwire.errors import (
    ChannelBroken,
    FrameTooLarge,
    IpcwireError,
    RemoteProtocolError,
    Timeout,
)

__all__ = ["Handshake", "StreamProtocol", "ch_server_handshake_for_refusal"]

_LINGER: Final = 1.0  # seconds a refused client may keep sending before it is cut off


Handshake = ClientHandshake | ServerHandshake


class StreamProtocol(asyncio.BufferedProtocol):
    """Feeds one connection's bytes to its channel, after running the handshake."""

    def __init__(
        self,
        channel: AioStreamChannel,
        handshake: Handshake | None,
        on_ready: Callable[[AioStreamChannel], None],
        on_failed: Callable[[IpcwireError], None],
        *,
        authorize: Callable[[Any], tuple[PeerInfo, IpcwireError | None]] | None = None,
        handshake_timeout: float = 10.0,
        hold: Callable[[StreamProtocol], bool] | None = None,
        half_close: bool = False,
    ) -> None:
        self.ch = channel
        # A socket's peer may shut down its sending side and still read the replies (nc -N,
        # socat, any client that ends its input): keep the transport open for writing.
        self._half_close = half_close
        # a listener's: True when this client, past its handshake, must wait for a place in
        # the backlog (its welcome unsent, so its connect() has not returned)
        self._hold = hold
        self._waiting = False  # held: it waits for release()
        self._welcome = b""  # the handshake's last reply, sent by release()
        self.hs = handshake if handshake is not None and handshake.needed else None
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._authorize = authorize
        self._timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._lingering = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not always an asyncio.Transport subclass (uvloop's are not).
        transport = cast(asyncio.Transport, transport)
        if transport.get_extra_info("sslcontext") is not None:
            self._half_close = False  # TLS has no half-close (asyncio warns if asked)
        ch = self.ch
        ch._transport = transport
        if ch._closed:
            # Closed before its connection was made: a listener that dropped it (the oldest
            # of too many in their handshake) or closed, between accepting the socket and
            # this callback. Its close could not reach the transport: end it here.
            transport.abort()
            return
        if self._authorize is not None:
            peer, refusal = self._authorize(transport.get_extra_info("socket"))
            ch._peer = peer
            if refusal is not None:
                hs = self.hs or ch_server_handshake_for_refusal(ch)
                assert isinstance(hs, ServerHandshake)
                self._fail(refusal, hs.reject(refusal, "permission").send)
                return
        if self.hs is None:
            if self._hold is not None and self._hold(self):
                # no handshake to finish first: accept() has no room, so it waits, unread
                self._waiting = True
                transport.pause_reading()
            else:
                self._ready()
            return
        ch._decoder.max_frame = HANDSHAKE_MAX_FRAME
        if isinstance(self.hs, ClientHandshake):
            transport.write(self.hs.hello())
        self._timer = ch._loop.call_later(self._timeout, self._expired)

    def alive(self) -> bool:
        """Whether a held client is still there to be let in."""
        t = self.ch._transport
        return t is not None and not t.is_closing()

    def release(self) -> None:
        """Let a held client in (the listener made room for it): send its welcome and hand
        it over."""
        self._waiting = False
        t = self.ch._transport
        if t is None or t.is_closing():
            return
        t.resume_reading()
        self._welcome_and_ready()  # (delivers what arrived before the pause took hold)

    def _welcome_and_ready(self) -> None:
        welcome, self._welcome = self._welcome, b""
        t = self.ch._transport
        if welcome and t is not None:
            t.write(welcome)
            if t.is_closing():  # the write failed at once (EPIPE): it is gone already
                self._fail(self._dropped("was gone before its handshake completed"), b"")
                return
        self._ready()

    def _expired(self) -> None:
        if self.hs is None:
            return
        if isinstance(self.hs, ServerHandshake):  # (a listener's log: the blocking one's words)
            why = f"it did not finish the handshake within {self._timeout} s"
        else:
            why = f"{self.ch.url}: the handshake did not finish within {self._timeout} s"
        self._fail(Timeout(why, endpoint=self.ch.url), b"")

    def _dropped(self, why: str) -> ChannelBroken:
        """A client the listener drops during its handshake (ChannelBroken: logged at INFO,
        in the blocking listener's words, "it ...")."""
        return ChannelBroken(f"it {why}", endpoint=self.ch.url)

    def _ready(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        ch = self.ch
        ch._decoder.grow()
        if self.hs is not None:
            ch._decoder.max_frame = ch._wire.max_frame
            ch._wire.send_limit = self.hs.peer_max_frame
            if self.hs.goodbye and isinstance(ch._decoder, LengthPrefixDecoder):
                ch._decoder.goodbye = True
            self.hs = None
        self._on_ready(ch)
        if ch._decoder.buffered:
            ch._deliver()

    def _fail(self, error: IpcwireError, reply: bytes) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.hs = None
        t = self.ch._transport
        if t is not None:
            if reply and t.can_write_eof():
                # Lingering close: send the reason, half-close, discard what the client still
                # sends until it closes (or _LINGER passes), so it reads the reason.
                t.write(reply)
                t.write_eof()
                self._lingering = True
                self._timer = self.ch._loop.call_later(_LINGER, t.close)
            else:
                if reply:
                    t.write(reply)
                t.close()
        self._on_failed(error)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.ch._decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self._lingering:
            return  # refused: what it sends is discarded (the view is simply reused)
        ch = self.ch
        ch._decoder.buffer_updated(nbytes)
        if self._waiting:
            # held (uvloop starts reading after connection_made even when paused there)
            if ch._transport is not None:
                ch._transport.pause_reading()
        elif self.hs is None:
            ch._deliver()
        else:
            self._handshake_step()

    def _handshake_step(self) -> None:
        dec = self.ch._decoder
        while self.hs is not None:
            try:
                frame = dec.next_frame()
            except FrameTooLarge as exc:
                if isinstance(self.hs, ServerHandshake):
                    refused = self.hs.misframed(exc.header)
                    if refused is not None and refused.error is not None:
                        self._fail(refused.error, refused.send)
                        return
                    why = "sent an oversized handshake frame (not an ipcwire client?)"
                    self._fail(self._dropped(why), b"")
                    return
                self._fail(
                    RemoteProtocolError(  # (the blocking client's words: _stream/handshake.py)
                        f"{self.ch.url} answered the handshake with something that is not "
                        f"ipcwire (framing={self.ch._wire.framing!r})",
                        endpoint=self.ch.url,
                    ),
                    b"",
                )
                return
            if frame is None:
                return
            try:
                step = self.hs.receive(frame)
            except IpcwireError as exc:  # the client side raises
                # (with why it leaves, for the server's log)
                self._fail(exc, self.hs.farewell if isinstance(self.hs, ClientHandshake) else b"")
                return
            if step.error is not None:
                self._fail(step.error, step.send)
                return
            if step.done:
                self._welcome = step.send
                if self._hold is not None and self._hold(self):
                    # accept() has no room: it waits, its welcome unsent (the handshake
                    # deadline no longer applies: as in the kernel's backlog, until it goes)
                    self._waiting = True
                    if self._timer is not None:
                        self._timer.cancel()
                    return
                self._welcome_and_ready()
                return
            if step.send and self.ch._transport is not None:
                self.ch._transport.write(step.send)

    def eof_received(self) -> bool:
        if self._lingering:
            return False
        if isinstance(self.hs, ServerHandshake) and self.hs.awaiting_proof:
            self._fail(token_mismatch(self._client()), b"")
            return False
        if isinstance(self.hs, ServerHandshake):
            self._fail(self._dropped("closed the connection during the handshake"), b"")
            return False
        if self.hs is not None:
            self._fail(
                ChannelBroken(
                    f"{self.ch.url} closed the connection during the handshake: not an ipcwire "
                    f"endpoint with this framing, or it refused this process (see its log)",
                    endpoint=self.ch.url,
                ),
                b"",
            )
            return False
        if self._half_close:
            self.ch._peer_eof()
            return True
        return False

    def _client(self) -> str:
        """The client, in a listener's log."""
        peer = self.ch._peer
        pid = f" (pid {peer.pid} uid {peer.uid})" if peer is not None and peer.pid else ""
        return f"the client of {self.ch.url}{pid}"

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if isinstance(self.hs, ServerHandshake):
            why = "failed during the handshake" + (f": {exc}" if exc is not None else "")
            self._fail(self._dropped(why), b"")
        elif self.hs is not None:
            why = f": {exc}" if exc is not None else ""
            self._fail(
                ChannelBroken(
                    f"{self.ch.url}: the connection was lost during the handshake{why}",
                    endpoint=self.ch.url,
                ),
                b"",
            )
        self.ch._connection_lost(exc)

    def pause_writing(self) -> None:
        self.ch._pause_writing()

    def resume_writing(self) -> None:
        self.ch._resume_writing()


def ch_server_handshake_for_refusal(ch: AioStreamChannel) -> ServerHandshake:
    """A handshake object only used to phrase a refusal in the channel's framing."""
    return ServerHandshake(
        codec=ch._wire.codec.name,
        framing=ch._wire.framing,
        max_frame=ch._wire.max_frame,
        token=None,
        endpoint=ch.url,
    )
