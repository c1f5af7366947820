"""What the blocking and asyncio SSE drivers share: the listener's options and binding, the
sending end, the one-way errors (the receiving end's share is in ``_client_channel``)."""

from __future__ import annotations

import dataclasses
import ssl as ssl_module
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ipcwire._core.codecs import BytesCodec, encoder_for
from ipcwire._core.ending import error_reason
from ipcwire._core.url import Endpoint
from ipcwire._exposure import warn_if_exposed
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
    Timeout,
)
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.sse._client import resolve
from ipcwire.sse._events import b64encode, encode_data
from ipcwire.sse._server import SseServer, SseSettings
from ipcwire.sse._streams import EVENT_OVERHEAD, ServerStream
from ipcwire.tcp._socket import TcpAddress
from ipcwire.tcp._socket import bind_listener as bind_tcp
from ipcwire.ws._web import OriginPolicy, build_pages

if TYPE_CHECKING:
    import socket

__all__ = [
    "EVENT_OVERHEAD",
    "LISTEN_OPTIONS",
    "ServerChannelBase",
    "batches",
    "bind",
    "new_server",
    "one_way_error",
    "warn_if_plaintext",
]

LISTEN_OPTIONS: Final = (
    "ssl",
    "backlog",
    "origins",
    "pages",
    "replay",
    "replay_bytes",
    "resume_window",
    "keepalive",
    "retry",
)


def batches(
    datas: list[bytes], max_events: int, max_bytes: int
) -> Iterator[tuple[list[bytes], int]]:
    """Split events into batches the replay buffer can hold whole (count and bytes), so an
    event is never evicted before it was written."""
    batch: list[bytes] = []
    size = 0
    for data in datas:
        nbytes = len(data) + EVENT_OVERHEAD
        if batch and (len(batch) >= max_events or size + nbytes > max_bytes):
            yield batch, size
            batch, size = [], 0
        batch.append(data)
        size += nbytes
    if batch:
        yield batch, size


def one_way_error(url: str, *, closed: bool = False) -> LocalProtocolError | ChannelClosed:
    """A client's send: the wrong direction of a one-way channel (ChannelClosed if it is
    closed). The server side's recv() waits for the stream to end instead (see
    :meth:`ServerChannelBase._recv_error`)."""
    if closed:
        return ChannelClosed(f"{url} is closed", endpoint=url)
    return LocalProtocolError(
        f"{url}: Server-Sent Events go from the server to its clients; a client cannot send. "
        f"Use ws:// for both directions, or http:// for requests"
    )


# -- the serving side -----------------------------------------------------------------------
def bind(
    endpoint: Endpoint, options: ChannelOptions, kw: dict[str, Any]
) -> tuple[socket.socket, SseSettings, ssl_module.SSLContext | None, int]:
    """Validate the listener's URL and options and bind its socket.

    Raises:
        AddressInUse, PermissionDenied, ConfigurationError, InvalidURL.
    """
    addr = resolve(endpoint, listening=True)
    url = endpoint.url
    ssl = kw.pop("ssl", None)
    # at least 1: asyncio accepts at most backlog connections per wake-up (none at 0), and
    # the server refuses new streams once backlog of them wait for accept()
    backlog = max(1, int(kw.pop("backlog", 128)))
    origins = kw.pop("origins", None)
    pages = kw.pop("pages", None)
    try:
        replay = int(kw.pop("replay", 1024))
        replay_bytes = int(kw.pop("replay_bytes", 16 * 1024 * 1024))
        resume_window = float(kw.pop("resume_window", 60.0))
        keepalive = float(kw.pop("keepalive", 15.0))
        retry_opt = kw.pop("retry", 1.0)
        retry = None if retry_opt is None else float(retry_opt)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad option for {url}: {exc}") from None
    reject_unknown(kw, endpoint, LISTEN_OPTIONS)
    if (
        replay < 1
        or replay_bytes < 1
        or not resume_window >= 0  # (NaN too)
        or not keepalive > 0
        or (retry is not None and not 0 <= retry < 1e9)  # sent in ms, as an integer
    ):
        raise ConfigurationError(
            f"{url}: replay= and replay_bytes= must be >= 1, resume_window= and retry= >= 0, "
            f"keepalive= > 0"
        )
    if addr.secure and ssl is None:
        raise ConfigurationError(
            f"listening at {url} needs ssl=SSLContext with a certificate, or use sse+http://"
        )
    if ssl is not None and not addr.secure:
        raise ConfigurationError(f"ssl= is for sse+https:// URLs, not {url}")
    policy = OriginPolicy.build(origins, url)
    built_pages = build_pages(pages, url)
    sock = bind_tcp(TcpAddress(addr.host, addr.port), url, backlog)
    real = addr.url(sock.getsockname()[1])
    settings = SseSettings(
        url=real,
        path=addr.path,
        options=dataclasses.replace(options, url=real),
        origins=policy,
        pages=built_pages,
        replay=replay,
        replay_bytes=replay_bytes,
        resume_window=resume_window,
        keepalive=keepalive,
        retry=retry,
    )
    return sock, settings, ssl, backlog


def warn_if_plaintext(
    sock: socket.socket, settings: SseSettings, ssl: ssl_module.SSLContext | None
) -> None:
    """Log one warning when the listener bound to ``sock`` takes clients from other machines
    without TLS (its token, if it has one, is in every request's header)."""
    warn_if_exposed(
        settings.url,
        str(sock.getsockname()[0]),
        token=settings.options.token,
        tls=ssl is not None,
        tls_fix="ssl= (an SSLContext) with sse+https://",
        sent_in="in every request (its Authorization header, or ?token= in its URL)",
    )


class ServerChannelBase:
    """The sending end of one client's stream: what both API flavours share."""

    def __init__(self, stream: ServerStream, server: SseServer, settings: SseSettings) -> None:
        self.url = settings.url
        self._stream = stream
        self._server = server
        codec = settings.options.codec
        self._encode_payload = encoder_for(codec, settings.url)  # (refusals name the URL)
        self._text = codec.name == "json"
        self._closed = False
        self._limit = stream.send_limit
        # ipcwire's own raw codec, whose encode() returns bytes as they are (a subclass's
        # encode must run)
        self._plain = type(codec) is BytesCodec
        self._bytes_sent = 0

    def _encode(self, obj: Any) -> tuple[bytes, int]:
        """The event data of one message (one line: see :meth:`ServerStream.append`), and
        the message's size.

        Raises:
            FrameTooLarge, LocalProtocolError: as :meth:`send` says.
        """
        return self._data(self._encode_payload(obj))

    def _encode_all(self, objs: Iterable[Any]) -> tuple[list[bytes], int]:
        """The event data of several messages (for ``send_many``), and their total size."""
        encoded = [self._encode(o) for o in objs]
        return [d for d, _ in encoded], sum(s for _, s in encoded)

    def _send_now(self, payload: Any) -> bool:
        """The usual send of an encoded message: bytes within the limit, base64 (not JSON),
        and the stream open with room; True once appended (else take the general path)."""
        if (
            type(payload) is bytes
            and len(payload) <= self._limit
            and not self._text
            and not self._closed
            and self._stream.send_one(b64encode(payload))
        ):
            self._bytes_sent += len(payload)
            return True
        return False

    def _data(self, payload: Any) -> tuple[bytes, int]:
        """:meth:`_encode` after the codec."""
        size = len(payload) if type(payload) is bytes else memoryview(payload).nbytes
        if size > self._stream.send_limit:
            raise self._too_large(size)
        if not self._text:
            return b64encode(payload), size
        data = encode_data(payload, True)
        if b"\n" in data:  # each line of the payload is a data: field of the event
            data = data.replace(b"\n", b"\ndata: ")
        return data, size

    def _too_large(self, size: int) -> FrameTooLarge:
        limit = self._stream.send_limit
        return FrameTooLarge(
            f"message of {size} bytes not sent to {self.url}: over the limit of {limit} "
            f"bytes; raise max_frame= on both sides, or split the message",
            size=size,
            limit=limit,
            endpoint=self.url,
        )

    def _check_open(self) -> None:
        """Raise if the stream cannot take events (call holding the stream's lock)."""
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        why = self._stream.broken
        if why is not None:
            raise ChannelBroken(
                f"{self.url}: stream {self._stream.sid} is gone: {why}", endpoint=self.url
            )

    def _recv_error(self) -> IpcwireError | None:
        """What the server side's ``recv()`` raises now (call holding the stream's lock);
        None: the stream is open, and ``recv()`` waits. It receives nothing (Server-Sent
        Events go one way), so it waits for the end of the stream: ``EndOfChannel`` once its
        client closed it (ipcwire's client says so: an HTTP DELETE), ``ChannelBroken`` once
        it is gone otherwise (its client did not come back within ``resume_window=``),
        ``ChannelClosed`` once this side, or its listener, was closed."""
        if self._closed:
            return ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if self._server.closing:
            return ChannelClosed(
                f"{self.url}: the listener was closed, and its streams with it", endpoint=self.url
            )
        s = self._stream
        why = s.broken
        if why is None:
            return None
        if s.released:
            return EndOfChannel(f"{self.url}: stream {s.sid} ended: {why}", endpoint=self.url)
        return ChannelBroken(f"{self.url}: stream {s.sid} is gone: {why}", endpoint=self.url)

    def _still_there(self, timeout: float | None) -> Timeout:
        return Timeout(
            f"the client of {self.url} (stream {self._stream.sid}) is still there after "
            f"{timeout} s: the server side of an event stream receives nothing, its recv() "
            f"waits for the stream to end",
            endpoint=self.url,
        )

    def _full(self, timeout: float | None) -> Timeout:
        return Timeout(
            f"the client of {self.url} is not reading: {self._stream.max_events} events (or "
            f"replay_bytes=) are waiting for it and the stream stayed full for {timeout} s",
            endpoint=self.url,
        )

    def _note_failure(self, exc: BaseException | None) -> None:
        """A ``with`` block or ``serve()`` handler that ``exc`` ended: the end event then
        says so (``failed``), and the client's channel ends with ChannelBroken."""
        reason = error_reason(exc)
        if reason and not self._closed:
            with self._stream.lock:
                self._stream.failed = reason

    def close(self) -> None:
        """End the stream: the client gets what is buffered, then the end event."""
        if self._closed:
            return
        self._closed = True
        s = self._stream
        with s.lock:
            wake = s.end("the server closed the stream")
            s.notify_senders()
            s.notify_gone()  # a recv() waiting for the end raises ChannelClosed
        if wake is not None:
            wake()

    @property
    def peer(self) -> PeerInfo | None:
        return PeerInfo(address=self._stream.peer)

    @property
    def stream_id(self) -> str:
        """The stream's id (the first part of every event id)."""
        return self._stream.sid

    @property
    def connected(self) -> bool:
        """Whether a client connection is attached now (False while it reconnects)."""
        return self._stream.attached

    def drop_connection(self) -> None:
        """Drop the current HTTP connection without ending the stream: the client reconnects
        and resumes. For tests of resumption, and to move a client to another server.
        Returns once the connection is aborted (events sent after it go to the replay buffer).
        """
        transport = self._stream.transport
        if transport is None:
            return
        done = threading.Event()

        def drop() -> None:
            transport.abort()
            done.set()

        self._server.call_soon(drop)
        done.wait(5.0)

    def statistics(self) -> ChannelStatistics:
        s = self._stream
        with s.lock:
            buffered, dropped = s.unwritten_bytes, s.dropped
        return ChannelStatistics(
            messages_sent=s.seq,  # every event of the stream was sent through this channel
            messages_received=0,
            bytes_sent=self._bytes_sent,
            bytes_received=0,
            buffered_bytes=buffered,
            dropped=dropped,
        )


C = TypeVar("C", bound=ServerChannelBase)


def new_server(
    settings: SseSettings,
    channel: type[C],
    put: Callable[[C], object],
    waiting: Callable[[], int],
) -> SseServer:
    """A listener's server: each new client stream goes to ``put`` as a ``channel``;
    ``waiting()`` counts those not accepted yet (new streams are refused at ``backlog=``)."""

    def on_new(stream: ServerStream) -> None:
        put(channel(stream, server, settings))

    server = SseServer(settings, on_new, waiting)
    return server
