"""The asyncio channel over a stream transport, and its listener.

A :class:`asyncio.BufferedProtocol` reads straight into the shared decoder's buffer, so the
blocking and asyncio drivers run the same I/O-free framing. Flow control both ways:

* sending waits (``drain``) while the transport's write buffer is over its high-water mark;
* receiving pauses the transport when undelivered messages exceed ``_HIGH_WATER`` bytes and
  resumes when the application has taken them, so a slow reader slows the writer instead of
  growing memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, cast

from ipcwire._core.framing import LengthPrefixDecoder, NdjsonDecoder
from ipcwire._core.handshake import (
    HANDSHAKE_MAX_FRAME,
    ClientHandshake,
    ServerHandshake,
    refusal,
)
from ipcwire._core.wire import WireFormat
from ipcwire._oserror import translate
from ipcwire._stream import native
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.options import ChannelOptions

__all__ = ["AioStreamChannel", "AioStreamListener", "StreamProtocol"]

log = logging.getLogger("ipcwire")

_HIGH_WATER: Final = 4 * 1024 * 1024  # undelivered bytes before reading pauses
_LINGER: Final = 1.0  # seconds a refused client may keep sending before it is cut off


class _Raise:
    """A queued error, raised by ``recv`` in order with the messages around it."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class AioStreamChannel(AioChannel):
    """A channel over an asyncio stream transport."""

    def __init__(
        self,
        url: str,
        wire: WireFormat,
        *,
        peer: PeerInfo | None = None,
        decoder: LengthPrefixDecoder | NdjsonDecoder | None = None,
    ) -> None:
        self.url = url
        self._wire = wire
        self._pack = wire.packer
        self._decode = wire.decode
        self._decoder = decoder if decoder is not None else wire.decoder()
        # Raw bytes with length framing: frames parsed in C when the extension is built
        # (FrameReceiver.take; see _stream/native.py), else by the decoder in Python.
        self._take: Any = None
        receiver = native.FRAME_RECEIVER
        if receiver is not None and wire.framing == "length" and wire.is_raw:
            self._take = receiver(-1, self._decoder).take
        self._peer = peer
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._queue: deque[Any] = deque()
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drainers: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._read_paused = False
        self._closed = False
        self._end: IpcwireError | None = None  # set when the connection ended
        self._half_open = False  # the peer sent end-of-stream but may still read our replies
        # An NDJSON client without a handshake: the first line may be the server's refusal.
        self.refusal_possible = False
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._sent = 0
        self._received = 0
        self._bytes_sent = 0
        self._bytes_received = 0

    # -- sending ----------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = self._pack(obj)
        self._write(data, 1)
        if self._write_paused:
            await self._drain(timeout)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        items = objs if isinstance(objs, list | tuple) else list(objs)
        if items:
            self._write(self._wire.pack_many(items), len(items))
            if self._write_paused:
                await self._drain(timeout)

    def _write(self, data: Any, count: int) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        t = self._transport
        if (self._end is not None and not self._half_open) or t is None or t.is_closing():
            raise ChannelBroken(
                f"cannot send to {self.url}: the connection is gone ({self._end})",
                endpoint=self.url,
            )
        if type(data) is tuple:
            t.writelines(data)
            self._bytes_sent += len(data[0]) + memoryview(data[1]).nbytes
        else:
            t.write(data)
            self._bytes_sent += len(data)
        if self._half_open and t.is_closing():
            # after the peer's end-of-stream, a write that failed at once means it is gone
            raise ChannelBroken(
                f"cannot send to {self.url}: it closed its end and no longer reads",
                endpoint=self.url,
            )
        self._sent += count

    async def _drain(self, timeout: float | None) -> None:
        fut = self._loop.create_future()
        self._drainers.append(fut)
        try:
            if timeout is None:
                await fut
            else:
                async with asyncio.timeout(timeout):
                    await fut
        except TimeoutError:
            raise Timeout(
                f"{self.url} is not reading: the message is queued but the write buffer "
                f"stayed full for {timeout} s",
                endpoint=self.url,
            ) from None
        finally:
            if fut in self._drainers:
                self._drainers.remove(fut)

    # -- receiving --------------------------------------------------------------------------
    async def recv(self, *, timeout: float | None = None) -> Any:
        q = self._queue
        if q and not self._closed:
            item = q.popleft()
            if not q:
                self._drained()
            if type(item) is _Raise:
                raise item.exc
            self._received += 1
            return item
        return await self._wait_recv(timeout)

    async def _wait_recv(self, timeout: float | None) -> Any:
        q = self._queue
        while True:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            if q:
                # what the wake-up delivered: taken here, without another coroutine
                item = q.popleft()
                if not q:
                    self._drained()
                if type(item) is _Raise:
                    raise item.exc
                self._received += 1
                return item
            if self._end is not None:
                raise self._end
            if timeout == 0:
                raise Timeout(f"no message from {self.url} yet", endpoint=self.url)
            if self._waiter is not None:
                raise LocalProtocolError(
                    f"another task is already receiving on {self.url}; receive from one task "
                    f"(and fan out with a queue), or open one channel per task"
                )
            fut = self._waiter = self._loop.create_future()
            try:
                if timeout is None:
                    await fut
                else:
                    async with asyncio.timeout(timeout):
                        await fut
            except TimeoutError:
                raise Timeout(
                    f"no message from {self.url} within {timeout} s", endpoint=self.url
                ) from None
            finally:
                self._waiter = None

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        out = [await self.recv(timeout=timeout)]
        q = self._queue
        while q and (max_messages is None or len(out) < max_messages):
            if type(q[0]) is _Raise:
                break
            out.append(q.popleft())
        self._received += len(out) - 1
        if not q:
            self._drained()
        return out

    def _drained(self) -> None:
        self._queued_bytes = 0
        if self._read_paused and self._transport is not None and not self._closed:
            self._read_paused = False
            self._transport.resume_reading()

    # -- called by the protocol -------------------------------------------------------------
    def _deliver(self) -> None:
        dec = self._decoder
        decode = self._decode
        q = self._queue
        n = 0
        take = self._take
        if take is not None:
            while (m := take()) is not None:
                n += len(m)
                q.append(m)
        while True:
            try:
                frame = dec.next_frame()
            except FrameTooLarge as exc:
                q.append(_Raise(exc))
                continue
            if frame is None:
                break
            size = len(frame)
            n += size
            try:
                q.append(decode(frame))
            except Exception as exc:  # a codec's own error too: raised in its place, as blocking
                q.append(_Raise(exc))
        if n:
            self._bytes_received += n
            self._queued_bytes += n
        if q and self.refusal_possible:
            self.refusal_possible = False
            err = refusal(q[0], self.url) if type(q[0]) is not _Raise else None
            if err is not None:
                q[0] = _Raise(err)
        if q:
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)
            if self._queued_bytes > _HIGH_WATER and not self._read_paused:
                assert self._transport is not None
                self._read_paused = True
                self._transport.pause_reading()

    def _peer_eof(self) -> None:
        """The peer half-closed: what it sent is all there is, but it may still read."""
        if self._end is None:
            self._end = self._eof_error()
            self._half_open = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _eof_error(self) -> IpcwireError:
        if self._decoder.buffered:
            return ChannelBroken(
                f"{self.url} closed in the middle of a message "
                f"({self._decoder.partial_description()} arrived); the partial message "
                f"was discarded",
                endpoint=self.url,
            )
        return EndOfChannel(f"{self.url} closed its end", endpoint=self.url)

    def _connection_lost(self, exc: Exception | None) -> None:
        self._half_open = False
        if self._end is None:
            if exc is not None:
                err = (
                    translate(exc, self.url, "receiving from")
                    if isinstance(exc, OSError)
                    else (ChannelBroken(f"{self.url} broke: {exc}", endpoint=self.url))
                )
                err.__cause__ = exc
                self._end = err
            else:
                self._end = self._eof_error()
        self._wake_all(ChannelBroken(f"{self.url} is gone", endpoint=self.url))
        if not self._lost.done():
            self._lost.set_result(None)

    def _wake_all(self, drain_error: IpcwireError) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        for fut in self._drainers:
            if not fut.done():
                fut.set_exception(drain_error)
        self._drainers.clear()

    def _pause_writing(self) -> None:
        self._write_paused = True

    def _resume_writing(self) -> None:
        self._write_paused = False
        for fut in self._drainers:
            if not fut.done():
                fut.set_result(None)
        self._drainers.clear()

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_all(ChannelClosed(f"{self.url} is closed", endpoint=self.url))
        if self._transport is not None:
            self._transport.close()
        elif not self._lost.done():
            self._lost.set_result(None)

    async def aclose(self) -> None:
        self.close()
        if not self._lost.done():
            try:
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self._lost)
            except TimeoutError:
                if self._transport is not None:
                    self._transport.abort()

    @property
    def wire(self) -> WireFormat:
        """The codec and framing in use."""
        return self._wire

    def statistics(self) -> ChannelStatistics:
        framing = 4 if self._wire.framing == "length" else 1  # a header, or a newline
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent - framing * self._sent,
            bytes_received=self._bytes_received,
            buffered_bytes=self._decoder.buffered + self._queued_bytes,
        )


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
        self._hold = hold  # a listener's: True when this client must wait (reading paused)
        self._waiting = False  # held: its handshake waits for release()
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
        if self._authorize is not None:
            peer, refusal = self._authorize(transport.get_extra_info("socket"))
            ch._peer = peer
            if refusal is not None:
                hs = self.hs or ch_server_handshake_for_refusal(ch)
                assert isinstance(hs, ServerHandshake)
                self._fail(refusal, hs.reject(refusal, "permission").send)
                return
        if self._hold is not None and self._hold(self):
            # accept() has no room: this client waits, unread (its handshake too)
            self._waiting = True
            transport.pause_reading()
        if self.hs is None:
            if not self._waiting:
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
        """Let a held client in (the listener made room for it): go on with its handshake,
        or, without one, hand it over."""
        self._waiting = False
        t = self.ch._transport
        if t is None or t.is_closing():
            return
        t.resume_reading()
        if self.hs is None:
            self._ready()  # (delivers what arrived before the pause took hold)
        else:
            self._handshake_step()

    def _expired(self) -> None:
        if self.hs is not None:
            self._fail(
                Timeout(
                    f"{self.ch.url}: the handshake did not finish within {self._timeout} s",
                    endpoint=self.ch.url,
                ),
                b"",
            )

    def _ready(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        ch = self.ch
        if self.hs is not None:
            ch._decoder.max_frame = ch._wire.max_frame
            ch._wire.send_limit = self.hs.peer_max_frame
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
            except FrameTooLarge:
                self._fail(
                    RemoteProtocolError(
                        f"{self.ch.url}: an oversized handshake frame (not ipcwire?)",
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
                self._fail(exc, b"")
                return
            if step.error is not None:
                self._fail(step.error, step.send)
                return
            if step.send and self.ch._transport is not None:
                self.ch._transport.write(step.send)
            if step.done:
                self._ready()
                return

    def eof_received(self) -> bool:
        if self._lingering:
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

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.hs is not None:
            self._fail(
                ChannelBroken(f"{self.ch.url}: connection lost in the handshake: {exc}"), b""
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


async def client_connect(
    options: ChannelOptions,
    create: Callable[[Callable[[], StreamProtocol]], Any],
    peer: Callable[[Any], PeerInfo],
) -> AioStreamChannel:
    """Open one connection with ``create(protocol_factory)`` and run the client handshake."""
    loop = asyncio.get_running_loop()
    ch = AioStreamChannel(options.url, options.wire())
    ch.refusal_possible = not options.client_handshake().needed
    done: asyncio.Future[None] = loop.create_future()

    def ready(_: AioStreamChannel) -> None:
        if not done.done():
            done.set_result(None)

    def failed(err: IpcwireError) -> None:
        if not done.done():
            done.set_exception(err)

    proto = StreamProtocol(
        ch,
        options.client_handshake(),
        ready,
        failed,
        handshake_timeout=options.handshake_timeout,
        half_close=True,
    )
    transport, _ = await create(lambda: proto)
    ch._peer = peer(transport.get_extra_info("socket"))
    try:
        await done
    except BaseException:
        transport.abort()
        raise
    return ch


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
        # At most this many handshaken channels wait for accept(); the handshakes of the
        # clients behind them wait (reading paused) until accept() makes room, like the
        # kernel's backlog in front of the blocking listener.
        self._max_ready = max(1, max_ready)
        self._held: deque[StreamProtocol] = deque()
        self._released: set[AioStreamChannel] = set()  # were held, handshake under way
        self._on_close = on_close
        self._server: asyncio.Server | None = None
        self._ready: asyncio.Queue[AioStreamChannel | None] = asyncio.Queue()
        self._handshaking: set[AioStreamChannel] = set()  # connected, not yet ready
        self._closed = False

    def protocol_factory(self) -> StreamProtocol:
        """For ``loop.create_server``/``create_unix_server``."""
        opts = self._options
        ch = AioStreamChannel(self.url, opts.wire())
        self._handshaking.add(ch)
        return StreamProtocol(
            ch,
            opts.server_handshake(),
            self._handoff,
            lambda error: self._failed(ch, error),
            authorize=self._authorize,
            handshake_timeout=opts.handshake_timeout,
            hold=self._hold_if_full,
            half_close=True,
        )

    def _hold_if_full(self, proto: StreamProtocol) -> bool:
        room = self._ready.qsize() + len(self._released) < self._max_ready
        if room and not self._held:  # (never overtake the clients already waiting)
            return False
        self._held.append(proto)
        return True

    def _make_room(self) -> None:
        while self._held and self._ready.qsize() + len(self._released) < self._max_ready:
            proto = self._held.popleft()
            if not proto.alive():  # it went while it waited
                self._handshaking.discard(proto.ch)
                continue
            self._released.add(proto.ch)
            proto.release()

    def _handoff(self, ch: AioStreamChannel) -> None:
        self._handshaking.discard(ch)
        self._released.discard(ch)
        if self._closed:
            ch.close()  # nobody will accept it: cut the client off (its messages would be lost)
        else:
            self._ready.put_nowait(ch)

    def _failed(self, ch: AioStreamChannel, error: IpcwireError) -> None:
        self._handshaking.discard(ch)
        if not self._closed:
            log.warning("ipcwire: %s refused or dropped a client: %s", self.url, error)
        if ch in self._released:
            self._released.discard(ch)
            self._make_room()  # its place goes to the next client waiting

    def attach(self, server: asyncio.Server) -> None:
        self._server = server

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        try:
            if timeout is None:
                ch = await self._ready.get()
            else:
                async with asyncio.timeout(timeout):
                    ch = await self._ready.get()
        except TimeoutError:
            raise Timeout(
                f"no client connected to {self.url} within {timeout} s", endpoint=self.url
            ) from None
        if ch is None:
            self._ready.put_nowait(None)  # wake any other accepting task too
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        self._make_room()
        return ch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()  # listening sockets only; never waits for clients
        while not self._ready.empty():
            ch = self._ready.get_nowait()
            if ch is not None:
                ch.close()
        for ch in list(self._handshaking):  # as the blocking listener: cut off, never handed out
            ch.close()
        self._held.clear()
        self._ready.put_nowait(None)
        if self._on_close is not None:
            self._on_close()


def explain_or_translate(
    exc: OSError, url: str, explain: Callable[[OSError], IpcwireError | None]
) -> IpcwireError:
    """The helpful error for a failed connect."""
    return explain(exc) or translate(exc, url, "connecting to")
