"""The asyncio WebSocket channel: one ``websockets.asyncio`` connection as an ipcwire channel."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConcurrencyError, ConnectionClosed
from websockets.frames import BINARY, TEXT, CloseCode
from websockets.protocol import OPEN

from ipcwire._core.codecs import Codec
from ipcwire._oserror import translate
from ipcwire._stream.transport import forked_error, watch_fork
from ipcwire.aio._timeouts import within
from ipcwire.aio._without_loop import (
    closable_socket,
    end_socket,
    handed_to_loop,
    not_this_loop,
)
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import PeerInfo
from ipcwire.errors import IpcwireError, Timeout
from ipcwire.ws._common import ChannelCore, check_payload, close_reason, concurrency_error
from ipcwire.ws._fast import FastFrames
from ipcwire.ws._queue import FastAioAssembler

__all__ = ["AioWsChannel"]


class AioWsChannel(ChannelCore, AioChannel):
    """One WebSocket connection as an ipcwire channel (asyncio)."""

    _conn: Connection

    def __init__(
        self,
        conn: Connection,
        url: str,
        codec: Codec,
        *,
        max_frame: int,
        send_limit: int,
        peer: PeerInfo | None,
    ) -> None:
        super().__init__(conn, url, codec, max_frame=max_frame, send_limit=send_limit, peer=peer)
        self._loop = asyncio.get_running_loop()
        self._closing: asyncio.Task[None] | None = None
        self._owner = os.getpid()
        self._forked = False  # the parent's connection, in a forked child (_after_fork)
        watch_fork(self)

    # -- sending ----------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._closed:
            raise self._closed_error()
        if self._forked:
            raise self._forked_error()
        payload = check_payload(self._codec, obj, self._send_limit, self.url)
        conn = self._conn
        try:
            if self._write_frame(payload):
                # the library drains after every write; that waits only while the transport
                # is over its high-water mark (or closing), so only then is it awaited here
                if conn.paused or conn.transport.is_closing():
                    self._check_loop()
                    async with within(timeout):
                        await conn.drain()
                    self._check_open()
            elif timeout is None:
                self._check_loop()
                await conn.send(payload, text=self._text)
                self._check_open()
            else:
                self._check_loop()
                async with within(timeout):
                    await conn.send(payload, text=self._text)
                self._check_open()
        except TimeoutError:
            raise self._send_timeout(timeout) from None
        except ConnectionClosed as exc:
            raise self._error(exc, sending=True) from exc
        except OSError as exc:  # the connection died while the send drained (a reset)
            raise self._lost(exc) from exc
        self._sent += 1
        self._bytes_sent += len(payload)

    def _lost(self, exc: OSError) -> IpcwireError:
        """The error for a send whose connection died under it (the library's ``drain()``
        lets the transport's OSError through: a peer killed while the send waited for room
        was a bare ``ConnectionResetError``)."""
        if self._closed:
            return self._closed_error()
        return translate(exc, self.url, "sending to")

    def _write_frame(self, payload: Any) -> bool:
        """Write one message as one frame to the transport, as the library's ``send`` does,
        without its layers (``ipcwire.ws._fast``). False when the connection is not plainly
        open for it (closing, a fragmented send going on, compression): then the library's
        ``send`` does it, or raises what it raises."""
        conn = self._conn
        protocol = conn.protocol
        if (
            not isinstance(protocol, FastFrames)
            or not protocol.plain_frames()
            or protocol.state is not OPEN
            or protocol.expect_continuation_frame
            or getattr(conn, "send_in_progress", False) is not None
        ):
            return False
        chunks = protocol.frame_bytes(payload, TEXT if self._text else BINARY)
        if protocol.writes:
            conn.send_data()  # what data_received queued (a pong) goes first
        write = conn.transport.write
        for chunk in chunks:
            write(chunk)
        return True

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        if self._closed:
            raise self._closed_error()
        if self._forked:
            raise self._forked_error()
        payloads = [check_payload(self._codec, o, self._send_limit, self.url) for o in objs]
        if not payloads:
            return
        self._check_loop()  # (the library's send_context() waits in the channel's loop)
        conn = self._conn
        write = conn.protocol.send_text if self._text else conn.protocol.send_binary
        try:
            # all frames, then one flush and drain
            async with within(timeout), conn.send_context():
                for p in payloads:
                    write(p)
            self._check_open()
        except TimeoutError:
            raise self._send_timeout(timeout) from None
        except ConnectionClosed as exc:
            raise self._error(exc, sending=True) from exc
        except OSError as exc:  # the connection died while the send drained (a reset)
            raise self._lost(exc) from exc
        self._sent += len(payloads)
        self._bytes_sent += sum(len(p) for p in payloads)

    def _check_loop(self) -> None:
        """LocalProtocolError when called from another event loop than the channel's (made
        in one ``asyncio.run()``, used in the next): the library's waits are on futures of
        that loop (asyncio's RuntimeError "attached to a different loop")."""
        if (wrong := not_this_loop(self._loop, self.url)) is not None:
            raise wrong

    def _check_open(self) -> None:
        """After a send waited (for the transport to drain): ``ChannelClosed`` if ``close()``
        was called meanwhile; it ends that wait (:meth:`_wake_senders`).

        Raises:
            ChannelClosed: this side closed the channel while the send waited.
        """
        if self._closed:
            raise self._closed_error()

    def _wake_senders(self) -> None:
        """End the waits of sends for the transport to drain (a peer that does not read) now,
        not when the closing handshake gives up (twice ``close_timeout``): they raise
        ``ChannelClosed``. What they wrote stays in the transport, ahead of the close frame:
        the peer gets it whole if it reads in time, else the connection is aborted."""
        for waiter in getattr(self._conn, "drain_waiters", ()):
            if not waiter.done():
                waiter.set_result(None)  # (the library's drain() returns; we raise)

    def _send_timeout(self, timeout: float | None) -> Timeout:
        return Timeout(
            f"{self.url} is not reading, or the network is not carrying the data (a "
            f"partition, a slow link): the message is queued but the write buffer stayed "
            f"full for {timeout} s",
            endpoint=self.url,
        )

    # -- receiving --------------------------------------------------------------------------
    async def recv(self, *, timeout: float | None = None) -> Any:
        if self._forked:
            raise self._forked_error()
        if self._deferred is not None and not self._closed:  # (closed wins, as blocking)
            exc, self._deferred = self._deferred, None
            raise exc
        data = self._take_queued()
        if data is None:
            data = await self._recv_raw(timeout)
        self._received += 1
        self._bytes_received += len(data)
        return self._decode(data)

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        decode = self._decode
        if self._forked:
            raise self._forked_error()
        if self._deferred is not None and not self._closed:  # (closed wins, as blocking)
            exc, self._deferred = self._deferred, None
            raise exc
        data = await self._recv_raw(timeout)
        out = [decode(data)]
        nbytes = len(data)
        queued = _queued_frames(self._conn)
        while queued and queued[0].fin and (max_messages is None or len(out) < max_messages):
            try:
                data = await self._conn.recv(decode=False)  # a whole message is queued
            except ConnectionClosed:
                break
            nbytes += len(data)
            try:
                out.append(decode(data))
            except IpcwireError as exc:  # its error comes next, in its place
                self._deferred = exc
                break
        self._received += len(out)
        self._bytes_received += nbytes
        return out

    def _take_queued(self) -> bytes | None:
        """A whole message already queued, taken without the library's coroutines
        (:meth:`FastAioAssembler.take_message`: what its ``get`` does then, and reading
        resumes at the low-water marks); None when there is none, or the library's ``recv``
        must decide."""
        messages = self._conn.recv_messages
        if self._closed or type(messages) is not FastAioAssembler:
            return None
        frame = messages.take_message()
        if frame is None:
            return None
        data = frame.data
        return data if type(data) is bytes else bytes(data)

    async def _recv_raw(self, timeout: float | None) -> bytes:
        if self._closed:
            raise self._closed_error()
        self._check_loop()
        try:
            if timeout is None:
                return await self._conn.recv(decode=False)
            async with within(timeout):
                return await self._conn.recv(decode=False)
        except TimeoutError:
            raise self._recv_timeout(timeout) from None
        except ConcurrencyError:
            raise concurrency_error(self.url) from None
        except ConnectionClosed as exc:
            raise self._error(exc, sending=False) from exc

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        # Another thread: the connection, its transport and the futures a recv() or send()
        # waits on are the loop's, so the close is handed to it (done here, the task it made
        # never ran until the loop woke: a waiting recv() slept on until its timeout, and the
        # peer saw nothing). A loop closed meanwhile: closed without it, below.
        if not self._forked and handed_to_loop(self._loop, self.close):
            return
        self._closed = True
        if self._forked:
            # A forked child closing its copy: the connection and the loop's registrations
            # (a copy of the parent's epoll) are the parent's. No closing handshake, no
            # shutdown(2), no loop work: the child's descriptor only.
            sock = closable_socket(self._conn.transport.get_extra_info("socket"))
            if sock is not None:
                sock.close()
            return
        if self._loop.is_closed():
            self._close_without_loop()
            return
        self._wake_senders()
        self._closing = self._loop.create_task(self._close())

    def _close_without_loop(self) -> None:
        """``close()`` after the loop ended (the channel outlived ``asyncio.run()``): the
        library's close needs the loop, and so does the transport's. The closing frame comes
        from the library's sans-I/O protocol and is written on the socket itself, when it fits
        now (not on TLS, whose records only the gone loop could write; not behind unsent
        data), then the socket is shut down and closed: the peer sees a clean close, or at
        least the end of the connection, at once."""
        conn = self._conn

        def closing_frame() -> bytes:
            if conn.protocol.state is not OPEN:
                return b""
            if self._close_reason:
                conn.protocol.send_close(CloseCode.INTERNAL_ERROR, self._close_reason)
            else:
                conn.protocol.send_close(CloseCode.NORMAL_CLOSURE)
            return b"".join(conn.protocol.data_to_send())

        end_socket(conn.transport, closing_frame)

    async def _close(self) -> None:
        """The closing handshake, bounded. The library bounds the wait for the peer's close
        frame by ``close_timeout``, but not the write of ours: behind a full write buffer (a
        peer that stopped reading) it waits until the keepalive gives up (20 s by default,
        never without keepalive). Past twice ``close_timeout`` the connection is aborted, as
        the blocking driver shuts its socket down."""
        conn = self._conn
        limit = conn.close_timeout
        try:
            async with within(None if limit is None else 2 * limit):
                if self._close_reason:  # 1011 after an exception (_aclose_after)
                    await conn.close(CloseCode.INTERNAL_ERROR, self._close_reason)
                else:
                    await conn.close()
        except TimeoutError:
            conn.transport.abort()

    async def _aclose_after(self, exc: BaseException | None) -> None:
        self._close_reason = close_reason(exc)
        await self.aclose()

    # -- across fork() (ipcwire._stream.transport.watch_fork) ---------------------------------
    def _after_fork(self) -> None:
        """In a child this process forked: the connection is the parent's. Every send and
        receive refuses from now on, before anything is written, read or locked."""
        self._forked = True
        self.__dict__.pop("_ipcwire_turns", None)  # request()'s turns: maybe a parent's thread's

    def _forked_error(self) -> IpcwireError:
        if self._closed:  # (closed in the child: Closed wins)
            return self._closed_error()
        return forked_error(self.url, self._owner)

    async def aclose(self) -> None:
        self.close()
        if self._closing is not None:
            await asyncio.shield(self._closing)  # bounded: see _close


def _queued_frames(conn: Connection) -> Any:
    """The library's queue of received frames, to take only what is already here."""
    frames = getattr(conn.recv_messages, "frames", None)
    return getattr(frames, "queue", None)
