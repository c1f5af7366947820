"""The asyncio channel over an :class:`~ipcwire.pipe._aio_fd.FdTransport` (pipes, a child's
stdin/stdout, FIFOs).

Its send takes one Python call to reach the transport in the usual case (an open pipe, a
message in one piece): the general path (:meth:`AioPipeChannel._write`, then the stream
channel's) checks the same things one by one and says what is wrong; it cost three more
calls per message, a third of the send's Python work.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ipcwire._core.framing import LengthPrefixDecoder, NdjsonDecoder, goodbye_frame
from ipcwire._core.wire import WireFormat
from ipcwire._oserror import translate
from ipcwire._stream.aio import AioStreamChannel
from ipcwire.aio._without_loop import not_this_loop
from ipcwire.channel import PeerInfo, closed_error
from ipcwire.errors import (
    ChannelBroken,
    EndOfChannel,
    IpcwireError,
    LocalProtocolError,
)
from ipcwire.pipe._aio_fd import FdTransport
from ipcwire.pipe._channel import DEFAULT_MAX_READAHEAD

__all__ = ["AioPipeChannel"]


class AioPipeChannel(AioStreamChannel):
    """An asyncio channel over an :class:`FdTransport`."""

    def __init__(
        self,
        url: str,
        wire: WireFormat,
        *,
        readable: bool,
        writable: bool,
        peer: PeerInfo | None = None,
        decoder: LengthPrefixDecoder | NdjsonDecoder | None = None,
        max_readahead: int = DEFAULT_MAX_READAHEAD,
    ) -> None:
        super().__init__(url, wire, peer=peer, decoder=decoder)
        self._can_read = readable
        self._can_write = writable
        self._max_readahead = max_readahead
        self._fdt: FdTransport | None = None  # the transport, for send's usual case

    def attach(self, transport: FdTransport) -> None:
        """Wire the transport's hooks to this channel (before ``transport.start()``)."""
        self._fdt = transport
        transport.on_write_error = self._write_lost
        if self._can_read and self._can_write and self._max_readahead > 0:
            transport.readahead_ok = lambda: self._queued_bytes < self._max_readahead

    def _fd_transport(self) -> FdTransport | None:
        t = self._transport
        return t if isinstance(t, FdTransport) else None

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = self._pack(obj)
        t = self._fdt
        if (
            t is not None
            and t._wfd is not None  # (None on a receiving end, once closed, after an error)
            and not t._closing
            and not self._closed  # (a forked copy is never marked: pipes may cross fork)
            and self._end is None  # (after the peer's end: the general path says what)
            and not isinstance(data, tuple)
        ):
            try:
                t.write(data)
            except RuntimeError as exc:  # a full pipe of a closed loop: it cannot wait
                wrong = not_this_loop(self._loop, self.url)
                if wrong is not None:
                    raise wrong from exc
                raise
            self._bytes_sent += len(data)
            self._sent += 1
        else:
            self._write(data, 1)
        if self._write_paused:
            await self._drain(timeout)

    def _write(self, data: Any, count: int) -> None:
        if self._closed:
            raise closed_error(self)
        if not self._can_write:
            raise LocalProtocolError(
                f"{self.url} is the receiving end of a one-way channel; send from the other end",
                endpoint=self.url,
            )
        t = self._fd_transport()
        if t is not None and t.write_error is not None:
            raise self._explain_end(translate(t.write_error, self.url, "sending to"), t.write_error)
        if t is not None and t.peer_exited and t._wfd is None:
            # (the transport ended its writes when the peer exited; the stream channel's
            # words would be "the connection is gone (None)")
            raise self._explain_end(
                ChannelBroken(
                    f"cannot send to {self.url}: the peer process exited, so nothing reads "
                    f"what is sent",
                    endpoint=self.url,
                ),
                None,
            )
        super()._write(data, count)

    async def _wait_recv(self, timeout: float | None) -> Any:
        # (here, not in recv(): a sending end's queue is always empty, so every receive on
        # it comes here, and a receive of a message already queued costs no extra call)
        if not self._can_read and not self._closed:
            raise LocalProtocolError(
                f"{self.url} is the sending end of a one-way channel; receive at the other end",
                endpoint=self.url,
            )
        return await super()._wait_recv(timeout)

    def _release_without_loop(self, t: asyncio.Transport) -> None:
        if isinstance(t, FdTransport):
            t.close_without_loop(goodbye_frame(self._reason) if self._decoder.goodbye else b"")
        else:
            super()._release_without_loop(t)

    def _write_lost(self, exc: OSError) -> None:
        err = self._explain_end(translate(exc, self.url, "sending to"), exc)
        for fut in self._drainers:
            if not fut.done():
                fut.set_exception(err)
        self._drainers.clear()

    def _connection_lost(self, exc: Exception | None) -> None:
        super()._connection_lost(exc)
        end = self._end
        if isinstance(end, EndOfChannel | ChannelBroken) and not self._closed:
            self._end = self._explain_end(end, end.__cause__)

    def _explain_end(self, err: IpcwireError, cause: BaseException | None) -> IpcwireError:
        """Hook: add what is known about the peer's fate (spawn adds the exit status)."""
        if cause is not None and err.__cause__ is None:
            err.__cause__ = cause
        return err
