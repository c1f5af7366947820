"""gRPC, blocking driver: the client channels, unary calls (:class:`GrpcUnaryChannel`) and one
bidirectional stream (:class:`GrpcStreamChannel`, over ``_sync.SyncStream``); opening them and
the listener are ``blocking.py``'s.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import deque
from typing import Any, Final

from ipcwire._core.codecs import encode_message
from ipcwire._core.wire import checked_decode
from ipcwire._deadline import limit
from ipcwire.channel import (
    _CLOSED_BECAUSE,
    Channel,
    ChannelStatistics,
    PeerInfo,
    closed_because,
    closed_error,
)
from ipcwire.errors import (
    EndOfChannel,
    LocalProtocolError,
)
from ipcwire.grpc import _watchdog
from ipcwire.grpc._channel import UnaryTries, forked
from ipcwire.grpc._grpcio import grpc
from ipcwire.grpc._protocol import (
    CALL,
    NO_REPLY_KEY,
    check_welcome,
    metadata_dict,
)
from ipcwire.grpc._sync import SyncStream
from ipcwire.options import (
    DEFAULT_REQUEST_TIMEOUT,
    ChannelOptions,
)

__all__ = ["GrpcStreamChannel", "GrpcUnaryChannel"]


class GrpcUnaryChannel(Channel):
    """A client channel of unary calls (``unary=True``): ``request`` is one call; ``send``
    makes a call and queues its reply for ``recv``."""

    def __init__(
        self,
        url: str,
        options: ChannelOptions,
        gch: Any,
        metadata: Any,
        nonce: bytes,
        reconnect: float | None = None,
    ) -> None:
        self.url = url
        self._options = options
        self._reconnect = reconnect or 0.0  # how long a refused call is tried again
        self._nonce = nonce
        self._codec = options.codec
        self._codec_decode = checked_decode(options.codec, url)  # RemoteProtocolError
        self._max_frame = options.max_frame
        self._gch = gch
        self._md = metadata
        self._method = gch.unary_unary(CALL)
        self._replies: deque[Any] = deque()
        self._closed = False
        self._owner = os.getpid()
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    def _call(self, obj: Any, timeout: float | None) -> Any:
        if self._closed:
            raise closed_error(self)
        if os.getpid() != self._owner:
            raise forked(self.url, self._owner)
        timeout = limit(timeout, self.url)  # grpc takes inf for a deadline in the past
        data = encode_message(self._codec, obj, 2**31 - 1, self.url)
        tries = UnaryTries(self.url, self._reconnect, timeout)
        while True:
            try:
                reply, call = self._method.with_call(data, timeout=tries.left(), metadata=self._md)
                break
            except grpc.RpcError as exc:
                if self._closed:
                    raise closed_error(self) from None
                pause = tries.failed(exc.code(), exc.details(), self._sent, len(data), exc)
            time.sleep(pause)
            tries.paused(self._closed)
        trailing = metadata_dict(call.trailing_metadata())
        if self._options.token is not None:  # the server proves it has the token too
            check_welcome(trailing, self._options, self.url, self._nonce)
        self._sent += 1
        self._bytes_sent += len(data)
        if trailing.get(NO_REPLY_KEY):
            return _NO_REPLY
        self._received += 1
        self._bytes_received += len(reply)
        return self._codec_decode(memoryview(reply))

    def _exchange(self, obj: Any, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Any:
        if self._replies:
            self.send(obj, timeout=timeout)
            return self.recv(timeout=0)
        reply = self._call(obj, timeout)
        if reply is _NO_REPLY:
            raise EndOfChannel(f"{self.url} handled the call but sent no reply", endpoint=self.url)
        return reply

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        reply = self._call(obj, timeout)
        if reply is not _NO_REPLY:
            self._replies.append(reply)

    def recv(self, *, timeout: float | None = None) -> Any:
        if self._closed:
            raise closed_error(self)
        if self._replies:
            return self._replies.popleft()
        raise LocalProtocolError(
            f"{self.url} is used with unary calls (unary=True): the server only speaks in reply "
            f"to a call. Use request(), or send() and then recv() the reply",
            endpoint=self.url,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if os.getpid() == self._owner:  # (not in a forked child: grpc is the parent's)
                self._gch.close()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(self._sent, self._received, self._bytes_sent, self._bytes_received)


_NO_REPLY: Final = object()


class GrpcStreamChannel(Channel):
    """A client's channel over one stream: what :func:`connect` returns.

    The stream's state (:class:`SyncStream`) is what grpcio's threads hold: its writer thread
    iterates the stream's outgoing messages, the reader pump fills its inbox, the call's done
    callback ends it. This object is held by the application alone, so that dropping it
    without close() is seen: a ``ResourceWarning``, and the stream is closed as close()
    closes it (the server sees the end; the threads, the call and the buffers go once the
    server ends its RPC, or after ``LINGER``). Before, the channel was that state itself, and
    grpcio's threads kept it (and themselves) alive until the server ended the call.
    """

    def __init__(self, stream: SyncStream) -> None:
        self._s = stream
        self.url = stream.url
        # The stream's own methods, bound here: one call (and, asyncio, one coroutine) less
        # per message than the delegating methods below, which document the API. They hold
        # the stream, not this object, so dropping this object is still seen (__del__).
        self.send = stream.send  # type: ignore[method-assign]
        self.send_many = stream.send_many  # type: ignore[method-assign]
        self.recv = stream.recv  # type: ignore[method-assign]
        self.recv_many = stream.recv_many  # type: ignore[method-assign]

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        self._s.send(obj, timeout=timeout)

    def send_many(self, objs: Any, *, timeout: float | None = None) -> None:
        self._s.send_many(objs, timeout=timeout)

    def recv(self, *, timeout: float | None = None) -> Any:
        return self._s.recv(timeout=timeout)

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        return self._s.recv_many(max_messages, timeout=timeout)

    def statistics(self) -> ChannelStatistics:
        return self._s.statistics()

    @property
    def closed(self) -> bool:
        return self._s.closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._s.peer

    def _close_after(self, exc: BaseException | None) -> None:
        self._pass_why()
        self._s._close_after(exc)

    def close(self) -> None:
        self._pass_why()
        self._s.close()

    def _pass_why(self) -> None:
        """Why request() closes this channel (``closed_because``, recorded on this object)
        is what the stream's ChannelClosed says."""
        why = self.__dict__.get(_CLOSED_BECAUSE)
        if why:
            closed_because(self._s, why)

    def __getattr__(self, name: str) -> Any:  # the stream's own state (tests, diagnostics)
        if name == "_s":
            raise AttributeError(name)
        return getattr(self._s, name)

    def __del__(self) -> None:
        """Dropped without close(): warn, and close the stream as close() does. In the
        dropping thread when the stream's lock is free; otherwise (the garbage collector ran
        in a thread that holds it) in the watchdog's thread, which takes it in turn.

        Not while the interpreter finalizes (the channel was a module global of a program
        that ended): grpcio's threads are stopped by then, some holding the locks a close
        needs, and the close waited for them for ever, so the program never exited. The
        process is ending: the server sees the connection go, as after a crash."""
        s = self.__dict__.get("_s")
        if s is None or s._closed or sys.is_finalizing():
            return
        if os.getpid() == s._owner:
            warnings.warn(
                f"unclosed gRPC channel {self.url!r}: the server is told it ended; close() "
                "it, or use 'with'",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )
        if s._lock.acquire(blocking=False):
            s._lock.release()
            s.close()
        else:
            _watchdog.after(0, s.close)
