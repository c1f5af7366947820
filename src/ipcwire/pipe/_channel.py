"""The blocking channel over an :class:`FdStream` (pipes, FIFOs, a child's stdio).

A thin :class:`~ipcwire._stream.blocking.StreamChannel`: the same framing, codecs, timeouts
and errors as the socket mechanisms, plus two things fds need:

* read-ahead while a send waits on a full pipe (see :mod:`ipcwire.pipe._fd`), bounded by
  ``max_readahead`` bytes of undelivered input;
* ``describe_end``: a callable naming why the peer went away (a child's exit status), added
  to ``EndOfChannel``/``ChannelBroken`` messages; it also says whether the peer failed, which
  turns a clean end of stream into ``ChannelBroken``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ipcwire._core.framing import LengthPrefixDecoder, NdjsonDecoder
from ipcwire._core.wire import WireFormat
from ipcwire._stream.blocking import StreamChannel, native_stream_classes
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelBroken, EndOfChannel, IpcwireError
from ipcwire.pipe._fd import FdStream
from ipcwire.pipe._fdutil import PIPE_BUF, is_pipe, is_pipe_like

__all__ = ["DEFAULT_MAX_READAHEAD", "ExplainingPipeChannel", "PipeChannel"]

DEFAULT_MAX_READAHEAD: Final = 256 * 1024 * 1024


class PipeChannel(StreamChannel):
    """A channel over one or two fds. One-way ends raise ``LocalProtocolError`` when used
    in the wrong direction."""

    def __init__(
        self,
        stream: FdStream,
        wire: WireFormat,
        url: str,
        *,
        peer: PeerInfo | None = None,
        decoder: LengthPrefixDecoder | NdjsonDecoder | None = None,
        max_readahead: int = DEFAULT_MAX_READAHEAD,
        describe_end: Callable[[], tuple[str, bool] | None] | None = None,
    ) -> None:
        super().__init__(stream, wire, url, peer=peer, decoder=decoder)
        self._fds = stream
        self._max_readahead = max_readahead
        self._describe_end = describe_end  # used by ExplainingPipeChannel
        if stream.rfd is not None and stream.wfd is not None and max_readahead > 0:
            stream.readahead = self._readahead
        self._use_native(stream, wire)

    def _use_native(self, stream: FdStream, wire: WireFormat) -> None:
        """Take the C paths of ``_ext/stream.c`` in fd mode where they are exactly right.

        Sending: raw-bytes messages that fit in ``PIPE_BUF`` (atomic on a pipe: all or
        nothing) to a non-blocking pipe or FIFO; a full pipe and longer messages take the
        Python path with its read-ahead. Receiving: raw bytes, length framing, a non-blocking
        pipe; a FIFO only once its first writer was seen (``on_armed``; until then the
        Python path polls first), and then reading before every wait, as the Python path
        does. The stream disables them for good before it closes an fd
        (``read_guard``/``write_guard``).
        """
        raw = wire.framing == "length" and wire.is_raw
        wfd = stream.wfd
        sender_cls, receiver_cls = native_stream_classes()
        if sender_cls is not None and wfd is not None and stream.nonblocking and is_pipe(wfd):
            sender = sender_cls(
                wfd,
                min(wire.send_limit, 0xFFFFFFFF),
                pipe_buf=PIPE_BUF,
                # a FIFO's writers take a flock (ipcwire/fifo/_path.py)
                flock=getattr(stream, "locks_writes", False),
            )
            self._sender = self._send_lock = sender
            if raw:
                self._fast_send = sender.send
            stream.write_guard = sender.disable
        rfd = stream.rfd
        if (
            receiver_cls is not None
            and raw
            and rfd is not None
            and stream.nonblocking
            and is_pipe_like(rfd)
        ):
            armed = stream.reads_first
            receiver = receiver_cls(
                rfd if armed else -1,
                self._decoder,
                waits=stream.wake_fds(),
                read_first=stream.polls_first,
            )
            self._receiver = self._recv_lock = receiver
            self._fast_recv = receiver.recv
            stream.read_guard = receiver.disable
            if not armed:
                stream.on_armed = lambda: receiver.enable(rfd)

    @property
    def readable(self) -> bool:
        """True when this end receives."""
        return self._fds.rfd is not None or self._eof

    @property
    def writable(self) -> bool:
        """True when this end sends."""
        return self._fds.wfd is not None

    def _readahead(self) -> bool:
        """Called by a send blocked on a full pipe when input is waiting: buffer it."""
        if not self._recv_lock.acquire(blocking=False):
            return False  # a receiving thread is reading already
        try:
            dec = self._decoder
            if self._eof or self._closed or dec.buffered >= self._max_readahead:
                return False
            try:
                n = self._fds.read_nowait(dec.get_buffer())
            except OSError:
                return False
            if n is None:
                return True
            if n == 0:
                self._eof = True
                return False
            dec.buffer_updated(n)
            return True
        finally:
            self._recv_lock.release()


class ExplainingPipeChannel(PipeChannel):
    """A :class:`PipeChannel` whose end-of-stream errors say what happened to the peer
    (``describe_end``), for spawn; kept apart so plain pipes pay nothing for it. The errors
    are explained where the channel raises them (:meth:`_explain`), not by wrapping
    ``send``/``recv``: the hot paths stay those of every stream channel."""

    def _explain(self, exc: IpcwireError) -> IpcwireError:
        """Add the peer's fate; a clean end of a peer that failed (a child with a non-zero
        exit status) becomes ``ChannelBroken``."""
        if (
            not isinstance(exc, EndOfChannel | ChannelBroken)
            or self._closed
            or self._describe_end is None
        ):
            return exc
        found = self._describe_end()
        if found is None:
            return exc
        why, failed = found
        kind: type[EndOfChannel | ChannelBroken] = type(exc)
        if failed and isinstance(exc, EndOfChannel):
            kind = ChannelBroken
        err = kind(f"{exc}; {why}", endpoint=exc.endpoint)
        err.__cause__ = exc.__cause__ or exc
        err.__suppress_context__ = True
        return err
