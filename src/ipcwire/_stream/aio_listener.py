"""The asyncio listener of the stream mechanisms: accepts connections, runs each client's
handshake off the accept path, and hands out channels past it."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from ipcwire._core.handshake import MAX_HANDSHAKING
from ipcwire._stream.aio import AioStreamChannel
from ipcwire._stream.aio_protocol import StreamProtocol
from ipcwire._stream.listener import DropLog, collected_unclosed, log_text, thread_twin
from ipcwire.aio.channel import AcceptQueue, AioChannel, AioListener
from ipcwire.channel import PeerInfo, describe_peer
from ipcwire.errors import ChannelBroken, IpcwireError, Timeout
from ipcwire.options import ChannelOptions

__all__ = ["AioStreamListener", "listens_in_this_process"]

log = logging.getLogger("ipcwire")

_listening: weakref.WeakSet[AioStreamListener] = weakref.WeakSet()  # attached, this process


def listens_in_this_process(address: object) -> bool:
    """Whether an asyncio listener of this process listens at ``address`` (a peer's
    ``getpeername()``): a blocking client that gets no handshake from it is blocking that
    listener's own event loop."""
    for listener in list(_listening):
        server = listener._server
        if server is None or listener._closed:
            continue
        for sock in server.sockets:
            try:
                if sock.getsockname() == address:
                    return True
            except OSError:
                pass
    return False


class AioStreamListener(AioListener):
    """Accepts connections from an asyncio server; hands out channels past their handshake."""

    def __init__(
        self,
        url: str,
        options: ChannelOptions,
        *,
        authorize: Callable[[Any], tuple[PeerInfo, IpcwireError | None]],
        on_close: Callable[[], None] | None = None,
        max_ready: int = 128,
    ) -> None:
        self.url = url
        self._options = options
        self._authorize = authorize
        # At most this many handshaken channels wait for accept(). A client whose handshake
        # ends while they are full waits, its welcome unsent (its connect() has not
        # returned), until accept() makes room: handshakes under way count apart (a silent
        # client must not hold a small backlog), bounded by MAX_HANDSHAKING.
        self._max_ready = max(1, max_ready)
        self._held: dict[AioStreamChannel, StreamProtocol] = {}  # oldest first
        self._on_close = on_close
        self._server: asyncio.Server | None = None
        self._ready: AcceptQueue[AioStreamChannel] = AcceptQueue()
        # connected, not yet ready (held ones too), oldest first
        self._handshaking: dict[AioStreamChannel, None] = {}
        self._closed = False
        self._dropped = False  # collected without close(): closed at the loop's next turn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._droplog = DropLog(url)  # (bounded: see DropLog)
        self._flush_timer: asyncio.TimerHandle | None = None

    def server_factory(self) -> Callable[[], StreamProtocol]:
        """The protocol factory for the loop's server: its twin's (see ``thread_twin``),
        so that the server, which the loop holds, does not keep this listener alive."""
        return thread_twin(self).protocol_factory

    def __del__(self) -> None:
        """Collected without :meth:`close`: a ``ResourceWarning``, and its twin is closed at
        the loop's next turn (a finalizer must not wait, nor touch the loop's state)."""
        if collected_unclosed(self) and self._loop is not None:
            try:  # (a twin's close: a bound method of this one would resurrect it)
                self._loop.call_soon_threadsafe(thread_twin(self).close)
            except RuntimeError:  # the loop is closed: its server went with it
                if self._on_close is not None:
                    self._on_close()

    def protocol_factory(self) -> StreamProtocol:
        """For ``loop.create_server``/``create_unix_server``."""
        opts = self._options
        wire = opts.wire()
        # a small buffer until the client is past its handshake: it grows with what it sends
        ch = AioStreamChannel(self.url, wire, decoder=wire.decoder(small=True))
        if len(self._handshaking) >= MAX_HANDSHAKING:  # (see MAX_HANDSHAKING)
            # the oldest still in its handshake; those past it, waiting for room, are next
            # in line for accept() and go only when nobody else is left
            oldest = next((c for c in self._handshaking if c not in self._held), None)
            if oldest is None:
                oldest = next(iter(self._handshaking))
            del self._handshaking[oldest]
            self._held.pop(oldest, None)
            self._log(
                logging.INFO,
                f"dropped: it was the oldest of {MAX_HANDSHAKING} in their handshake",
                "%s dropped a client: it was the oldest of %d in their handshake",
                self.url,
                MAX_HANDSHAKING,
            )
            oldest.close()
        self._handshaking[ch] = None
        return StreamProtocol(
            ch,
            opts.server_handshake(goodbye=True),
            self._handoff,
            lambda error: self._failed(ch, error),
            authorize=self._authorize,
            handshake_timeout=opts.handshake_timeout,
            hold=self._hold_if_full,
            half_close=True,
        )

    def _hold_if_full(self, proto: StreamProtocol) -> bool:
        room = self._ready.qsize() < self._max_ready
        if (room and not self._held) or self._closed:  # (never overtake those waiting)
            return False
        self._held[proto.ch] = proto
        return True

    def _make_room(self) -> None:
        while self._held and self._ready.qsize() < self._max_ready:
            ch = next(iter(self._held))
            proto = self._held.pop(ch)
            if not proto.alive():  # it went while it waited
                self._handshaking.pop(ch, None)
                continue
            proto.release()  # its welcome, then _handoff (or _failed if it is gone)

    def _handoff(self, ch: AioStreamChannel) -> None:
        self._handshaking.pop(ch, None)
        if self._closed:
            ch.close()  # nobody will accept it: cut the client off (its messages would be lost)
        else:
            self._ready.put(ch)

    def _failed(self, ch: AioStreamChannel, error: IpcwireError) -> None:
        ours = ch not in self._handshaking  # dropped by protocol_factory, which said so
        self._handshaking.pop(ch, None)
        self._held.pop(ch, None)
        if not self._closed and not ours:
            # as the blocking listener says it: a client that went or stalled is INFO
            # ("dropped pid 123: it ..."), a refusal (a token, an allow-list, the protocol) a
            # WARNING naming the client
            who = describe_peer(ch._peer)
            if isinstance(error, ChannelBroken | Timeout):
                kind = "dropped: " + str(error).partition(":")[0]
                self._log(logging.INFO, kind, "%s dropped %s: %s", self.url, who or "a client",
                          log_text(error))  # fmt: skip
            else:
                self._log(logging.WARNING, f"refused ({type(error).__name__})",
                          "%s refused a client (%s): %s", self.url, who or "?",
                          log_text(error))  # fmt: skip

    def _log(self, level: int, kind: str, msg: str, *args: object) -> None:
        """Log through the DropLog; its count of what it did not log is written when its
        window ends (a timer on the loop), or at close()."""
        self._droplog.log(level, kind, msg, *args)
        due = self._droplog.due()
        if due is not None and self._flush_timer is None:
            loop = asyncio.get_running_loop()
            delay = max(due - time.monotonic(), 0.0)
            self._flush_timer = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        self._droplog.flush(final=True)  # (the loop's timer may run a little early)

    def attach(self, server: asyncio.Server) -> None:
        self._server = server
        self._loop = server.get_loop()
        _listening.add(self)

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        ch = await self._ready.get(self.url, timeout)
        self._make_room()
        return ch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()  # listening sockets only; never waits for clients
        self._ready.close()
        for ch in list(self._handshaking):  # as the blocking listener: cut off, never handed out
            ch.close()
        self._held.clear()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._droplog.flush(final=True)
        if self._on_close is not None:
            self._on_close()
