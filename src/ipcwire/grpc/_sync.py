"""Blocking channels over grpcio's synchronous API.

A gRPC bidirectional stream is symmetric enough that one class serves both ends: a thread
*pumps* what arrives (the response iterator on the client, the request iterator on the
server) into an inbox, and ``send`` puts messages on a queue that grpcio drains through a
generator (the request iterator on the client, the response iterator on the server). Both
directions are bounded: the pump stops reading while the inbox holds more than
``HIGH_WATER`` bytes (gRPC's flow control then slows the sender), and ``send`` waits while
more than ``HIGH_WATER`` bytes are queued for grpcio.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import grpc  # type: ignore[import-untyped]
from ipcwire._core.codecs import BytesCodec, Codec
from ipcwire.channel import Channel, ChannelStatistics, PeerInfo
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
    Timeout,
)
from ipcwire.grpc._protocol import error_from_status

__all__ = ["HIGH_WATER", "SyncOneShot", "SyncStream", "encode"]

HIGH_WATER: Final = 4 * 1024 * 1024
LOW_WATER: Final = 1024 * 1024
_STOP: Final = object()  # ends the outgoing stream


def encode(codec: Codec, obj: Any, limit: int, url: str) -> bytes:
    """One message's bytes, checked against the peer's limit.

    Raises:
        FrameTooLarge: over ``limit`` (nothing sent). LocalProtocolError: cannot encode.
    """
    data = codec.encode(obj)
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > limit:
        raise FrameTooLarge(
            f"message of {len(data)} bytes not sent to {url}: over the peer's limit of {limit} "
            f"bytes; raise max_frame= on both sides, or split the message",
            size=len(data),
            limit=limit,
            endpoint=url,
        )
    return data


class SyncStream(Channel):
    """One end of an ipcwire gRPC stream (blocking); see docs/mechanisms/grpc.md."""

    def __init__(
        self,
        url: str,
        codec: Codec,
        send_limit: int,
        peer: PeerInfo | None,
        *,
        client: bool,
    ) -> None:
        self.url = url
        self._codec = codec
        self._raw = isinstance(codec, BytesCodec)
        self.send_limit = send_limit
        self._peer = peer
        self._client = client
        self._cond = threading.Condition(threading.Lock())
        self._inbox: deque[bytes] = deque()
        self._queued = 0
        self._end: IpcwireError | None = None
        self._broken: IpcwireError | None = None
        self._closed = False
        self._out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._unsent = 0
        self.pumped = threading.Event()
        self.on_close: Callable[[], None] | None = None
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    # -- what grpcio drives ---------------------------------------------------------------------
    def outgoing(self) -> Iterator[bytes]:
        """The messages to write, until the channel closes (grpcio iterates this)."""
        get = self._out.get
        cond = self._cond
        while True:
            item = get()
            if item is _STOP:
                return
            with cond:
                self._unsent -= len(item)
                if self._unsent <= LOW_WATER:
                    cond.notify_all()
            yield item

    def pump(self, incoming: Iterable[bytes], on_end: Callable[[], None] | None = None) -> None:
        """Move what arrives into the inbox until the stream ends (runs in its own thread)."""
        cond = self._cond
        end: IpcwireError
        try:
            for msg in incoming:
                with cond:
                    self._inbox.append(msg)
                    self._queued += len(msg)
                    cond.notify_all()
                    while self._queued > HIGH_WATER and not self._closed:
                        cond.wait()
            end = EndOfChannel(f"{self.url} closed the channel", endpoint=self.url)
            # The client's end of the stream (the server's side of a plain client's
            # half-close) leaves the server free to answer; anything else ends the RPC.
            over = self._client or on_end is not None
        except grpc.RpcError as exc:
            end = self._rpc_error(exc)
            over = True
        except Exception as exc:  # grpcio raises plain exceptions on some shutdown paths
            end = ChannelBroken(f"{self.url} broke: {exc!r}", endpoint=self.url)
            over = True
        self.ended(end, rpc_over=over)
        self.pumped.set()
        if on_end is not None:
            on_end()

    def _rpc_error(self, exc: Any) -> IpcwireError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        err = error_from_status(code, details, self.url, doing="receiving")
        if getattr(code, "name", "") == "CANCELLED" and not self._client:
            err = ChannelBroken(f"the client of {self.url} went away", endpoint=self.url)
        err.__cause__ = exc
        return err

    def ended(self, end: IpcwireError, *, rpc_over: bool = True) -> None:
        """Nothing more will arrive: receiving drains, then raises ``end``; if the RPC is
        over too, sending fails."""
        with self._cond:
            if self._end is None:
                self._end = end
            if rpc_over and self._broken is None:
                who = "the server" if self._client else "the client"
                self._broken = ChannelBroken(
                    f"cannot send to {self.url}: {who} ended the channel ({end})",
                    endpoint=self.url,
                )
            self._cond.notify_all()

    def finish(self) -> None:
        """End the RPC from this side (the server returns OK; the client half-closes)."""
        self._out.put(_STOP)

    def rpc_done(self) -> None:
        """grpcio says the RPC is over (server side): sends fail, the generator returns."""
        self.ended(ChannelBroken(f"the client of {self.url} went away", endpoint=self.url))
        self.finish()

    # -- the application's side -----------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = encode(self._codec, obj, self.send_limit, self.url)
        self._queue([data], timeout)

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        items = [encode(self._codec, o, self.send_limit, self.url) for o in objs]
        if items:
            self._queue(items, timeout)

    def _queue(self, items: list[bytes], timeout: float | None) -> None:
        size = sum(len(d) for d in items) if len(items) > 1 else len(items[0])
        with self._cond:
            self._check_send()
            if self._unsent > HIGH_WATER:
                deadline = None if timeout is None else time.monotonic() + timeout
                while self._unsent > HIGH_WATER:
                    wait = None if deadline is None else deadline - time.monotonic()
                    if wait is not None and wait <= 0:
                        raise Timeout(
                            f"{self.url} is not reading: {self._unsent} bytes wait to be sent; "
                            f"this message was not sent",
                            endpoint=self.url,
                        )
                    self._cond.wait(wait)
                    self._check_send()
            self._unsent += size
        put = self._out.put
        for d in items:
            put(d)
        self._sent += len(items)
        self._bytes_sent += size

    def _check_send(self) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if self._broken is not None:
            raise self._broken

    def recv(self, *, timeout: float | None = None) -> Any:
        return self._take(1, timeout)[0]

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        return self._take(max_messages, timeout)

    def _take(self, limit: int | None, timeout: float | None) -> list[Any]:
        with self._cond:
            inbox = self._inbox
            if not inbox or self._closed:
                self._wait(timeout)
            raw: list[bytes] = []
            while inbox and (limit is None or len(raw) < limit):
                raw.append(inbox.popleft())
            n = sum(len(m) for m in raw) if len(raw) > 1 else len(raw[0])
            self._queued -= n
            if self._queued <= HIGH_WATER:
                self._cond.notify_all()
        self._received += len(raw)
        self._bytes_received += n
        if self._raw:
            return raw
        decode = self._codec.decode
        return [decode(memoryview(m)) for m in raw]

    def _wait(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            if self._inbox:
                return
            if self._end is not None:
                raise self._end
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise Timeout(f"no message from {self.url} within {timeout} s", endpoint=self.url)
            self._cond.wait(wait)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self.finish()
        if self._client:
            # The server ends the RPC when it sees our half-close; wait for that (bounded),
            # so that it receives everything sent before close() as a clean end.
            self.pumped.wait(2.0)
        if self.on_close is not None:
            self.on_close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            self._sent, self._received, self._bytes_sent, self._bytes_received, self._queued
        )


class SyncOneShot(Channel):
    """The server's channel for one unary call: one message in, at most one reply out."""

    def __init__(
        self, url: str, codec: Codec, request: bytes, peer: PeerInfo | None, send_limit: int
    ) -> None:
        self.url = url
        self._codec = codec
        self._request: bytes | None = request
        self._peer = peer
        self._send_limit = send_limit
        self.reply: bytes | None = None
        self.done = threading.Event()
        self._gone: IpcwireError | None = None
        self._closed = False

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = encode(self._codec, obj, self._send_limit, self.url)
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if self.reply is not None:
            raise LocalProtocolError(
                f"the gRPC call to {self.url} was already answered: a unary call gets one reply "
                f"(clients that open a stream can receive more)",
                endpoint=self.url,
            )
        if self._gone is not None:
            raise self._gone
        self.reply = data
        self.done.set()

    def caller_gone(self, why: IpcwireError) -> None:
        self._gone = why
        self.done.set()

    def recv(self, *, timeout: float | None = None) -> Any:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        req, self._request = self._request, None
        if req is None:
            raise EndOfChannel(f"{self.url}: a unary call carries one message", endpoint=self.url)
        return req if isinstance(self._codec, BytesCodec) else self._codec.decode(memoryview(req))

    def close(self) -> None:
        self._closed = True
        self.done.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

    def statistics(self) -> ChannelStatistics:
        got = 0 if self._request is not None else 1
        sent = 0 if self.reply is None else 1
        return ChannelStatistics(sent, got, len(self.reply or b""), 0)
