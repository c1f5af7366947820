"""What both gRPC drivers' channels share, without waiting: the buffer bounds, how a message
is encoded and checked against the peer's limit, and the server's channel for one unary call
(:class:`OneShotCore`; each driver adds how the call's handler waits for the reply)."""

from __future__ import annotations

import os
import time
from typing import Any, Final

from ipcwire._core.codecs import BytesCodec, Codec, encode_message
from ipcwire._core.ending import error_reason
from ipcwire._core.wire import checked_decode
from ipcwire._stream.retry import backoff_delays
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import (
    ChannelClosed,
    ConnectionRefused,
    EndOfChannel,
    IpcwireError,
    LocalProtocolError,
)
from ipcwire.grpc._protocol import error_from_status, failure_details, unary_doing

__all__ = [
    "ACLOSE_WAIT",
    "CONNECT_KW",
    "EXIT_DRAIN",
    "EXIT_WAIT",
    "HIGH_WATER",
    "HIGH_WATER_MESSAGES",
    "LINGER",
    "LISTEN_KW",
    "LOW_WATER",
    "LOW_WATER_MESSAGES",
    "SEND_SLACK",
    "OneShotCore",
    "UnaryTries",
    "backlog",
    "forked",
]

HIGH_WATER: Final = 4 * 1024 * 1024
LOW_WATER: Final = 1024 * 1024  # the asyncio reader resumes below this
# The same bounds in messages, so a queue of small messages is bounded in time too: 4 MiB of
# 64-byte messages would be 65536 of them, seconds of backlog behind a slow reader.
HIGH_WATER_MESSAGES: Final = 1024
LOW_WATER_MESSAGES: Final = 256
LINGER: Final = 60.0  # a closed client stream waits this long for the server to end it
# A process that exits (or an event loop that ends) right after closing client channels waits
# this long, at most, for their servers to end the RPCs, i.e. to have read the goodbye. gRPC
# writes from its own threads: without the wait the connection can drop with the goodbye
# unread, and the server takes the clean close for a lost client.
EXIT_WAIT: Final = 2.0
# Once a closed client stream has handed grpcio everything, the exit can no longer see the
# server read (grpcio shows no acknowledgement short of the RPC's end): what is in flight, up
# to the server's inbox (HIGH_WATER) and the HTTP/2 windows, drains at the reader's pace, so
# the blocking exit waits this long for the end instead of EXIT_WAIT. At 2 s, a server reading
# 50 messages of 64 KiB a second had the exit give up on it in some runs.
EXIT_DRAIN: Final = 10.0
# asyncio's aclose() waits this long, at most, for what was sent before it to be written (to a
# peer that does not read, say); the rest goes on in the background, up to LINGER, as after
# the blocking close(), which returns at once
ACLOSE_WAIT: Final = 10.0
# A sender waiting for room wakes when this much was written: small, so that a writer held by
# a slow reader moves at the reader's pace instead of in bursts that stall it for seconds
# (4 MiB of 64-byte messages is 65536 of them).
SEND_SLACK: Final = 64 * 1024


def forked(url: str, owner: int) -> LocalProtocolError:
    """The error of a channel used in a process forked from its ``owner``: grpc's RPC stays
    with the parent (grpc is not fork-safe), so what the child sent would be lost."""
    return LocalProtocolError(
        f"{url} was opened in process {owner} and this is a child it forked ({os.getpid()}): a "
        f"gRPC channel does not cross fork() (what the child sends would be lost); connect "
        f"again in the child",
        endpoint=url,
    )


# The keywords connect() and listen() take besides the common ones, in both drivers.
CONNECT_KW: Final = (
    "timeout", "reconnect", "unary", "cafile", "certfile", "keyfile", "server_hostname",
    "credentials", "keepalive", "keepalive_timeout",
)  # fmt: skip
LISTEN_KW: Final = (
    "certfile", "keyfile", "client_ca", "credentials", "mode", "max_channels", "reply_timeout",
    "keepalive", "keepalive_timeout",
)  # fmt: skip


def backlog(url: str, messages: int, nbytes: int) -> str:
    """What a send that found no room in time says (nothing of it was queued)."""
    return (
        f"{url} is not reading: {messages} messages ({nbytes} bytes) wait to be sent (or "
        f"the network is not carrying them: a partition, a slow link); this message was not "
        f"sent"
    )


class OneShotCore:
    """The server's channel for one unary call: one message in, at most one reply out.

    ``reply`` is what the handler sent (None: nothing yet). The driver's subclass says how the
    call's handler learns that the channel is done (:meth:`_signal`) and wraps :meth:`_reply`
    and :meth:`_take` as its ``send`` and ``recv``."""

    def __init__(
        self, url: str, codec: Codec, request: bytes, peer: PeerInfo | None, send_limit: int
    ) -> None:
        self.url = url
        self._codec = codec
        self._codec_decode = checked_decode(codec, url)  # RemoteProtocolError on failure
        self._request: bytes | None = request
        self._peer = peer
        self._send_limit = send_limit
        self.reply: bytes | None = None
        self._gone: IpcwireError | None = None
        self._closed = False
        # The request did not decode (the application's recv() raised this): if no reply
        # comes, the caller is told so (INVALID_ARGUMENT), not answered "no reply".
        self.undecodable: IpcwireError | None = None
        # Why the application's with block (or serve() handler) failed ("": it did not): if
        # no reply comes, the caller is told so (INTERNAL, as a stream's), not "no reply".
        self.fail_reason = ""

    def _signal(self) -> None:
        """The reply is there, the caller is gone, or the channel closed: wake the handler."""
        raise NotImplementedError

    def _reply(self, obj: Any) -> None:
        data = encode_message(self._codec, obj, self._send_limit, self.url)
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
        self._signal()

    def caller_gone(self, why: IpcwireError) -> None:
        self._gone = why
        self._signal()

    def rpc_ended(self) -> bool:
        """Whether the caller is gone (it cancelled, died, or stopped waiting)."""
        return self._gone is not None

    def _take(self) -> Any:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        req, self._request = self._request, None
        if req is None:
            raise EndOfChannel(f"{self.url}: a unary call carries one message", endpoint=self.url)
        if type(self._codec) is BytesCodec:  # (not a subclass: its decode must run)
            return req
        try:
            return self._codec_decode(memoryview(req))
        except IpcwireError as exc:
            self.undecodable = exc
            raise

    def refusal(self) -> str | None:
        """What to tell a caller whose request did not decode and got no reply."""
        if self.undecodable is None or self.reply is not None:
            return None
        return (
            f"the request does not decode with codec={self._codec.name!r} (the server's "
            f"codec): {self.undecodable.__cause__ or self.undecodable}"
        )

    def failure(self) -> str | None:
        """The status details for a caller whose handler failed before it replied."""
        if not self.fail_reason or self.reply is not None:
            return None
        return failure_details(self.fail_reason)

    def _close_after(self, exc: BaseException | None) -> None:
        self.fail_reason = error_reason(exc)
        self.close()

    def close(self) -> None:
        self._closed = True
        self._signal()

    def statistics(self) -> ChannelStatistics:
        got = 0 if self._request is not None else 1
        sent = 0 if self.reply is None else 1
        return ChannelStatistics(sent, got, len(self.reply or b""), 0)


class UnaryTries:
    """The tries of one unary call, for both drivers (they do the calling and the waiting):
    a call refused before anything of it was sent is tried again, with the stream client's
    backoff, for ``reconnect`` seconds, within the call's ``timeout`` (each try gets what is
    left of it)."""

    def __init__(self, url: str, reconnect: float, timeout: float | None) -> None:
        self.url = url
        self.start = time.monotonic()
        self.timeout = timeout
        self.until = self.start + reconnect
        if timeout is not None:
            self.until = min(self.until, self.start + timeout)
        self._delays = backoff_delays()
        self._refused: IpcwireError | None = None

    def left(self) -> float | None:
        """The deadline of the next try (None: no limit)."""
        if self.timeout is None:
            return None
        return max(self.start + self.timeout - time.monotonic(), 0.0)

    def failed(
        self, code: Any, details: str | None, sent: int, nbytes: int, exc: BaseException
    ) -> float:
        """The pause before the next try, after a try failed with grpc's ``code``.

        Raises:
            IpcwireError: the failure's own error (``exc`` as its cause), unless it was a
                refusal and ``reconnect`` leaves time for another try.
        """
        err = error_from_status(
            code, details, self.url, doing=unary_doing(sent, details), sent=nbytes
        )
        err.__cause__ = exc
        wait = self.until - time.monotonic()
        if not isinstance(err, ConnectionRefused) or wait <= 0:
            raise err
        self._refused = err
        return min(next(self._delays), wait)

    def paused(self, closed: bool) -> None:
        """After the pause: go on with another try, unless the channel was closed meanwhile
        (ChannelClosed) or the call's timeout passed (the refusal)."""
        if closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        timeout, refused = self.timeout, self._refused
        if refused is not None and timeout is not None and time.monotonic() >= self.start + timeout:
            raise refused  # no time left for another try: still refused
