"""What the blocking and asyncio SSE client channels share: option checks, the reconnection
state, and the decisions that do not wait (what an error means, what a read's bytes do, when
to try again). The drivers keep the connection, the I/O and the waiting."""

from __future__ import annotations

import logging
import os
import ssl as ssl_module
from collections.abc import Callable, Mapping
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._oserror import translate
from ipcwire._stream.connect import tls_error
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    IpcwireError,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions, reject_unknown
from ipcwire.sse._client import ClientCore, resolve
from ipcwire.sse._http import parse_head
from ipcwire.sse._release import Release

__all__ = ["CLIENT_OPTIONS", "ClientChannelBase", "client_core"]

log = logging.getLogger("ipcwire")

CLIENT_OPTIONS: Final = (
    "timeout",
    "reconnect",
    "ssl",
    "server_hostname",
    "headers",
    "last_event_id",
    "allow_gaps",
    "retry",
    "retry_for",
    "idle_timeout",
)


def client_core(
    endpoint: Endpoint,
    options: ChannelOptions,
    kw: dict[str, Any],
    *,
    timeout: float | None,
    headers: Mapping[str, str] | None,
    last_event_id: str | None,
    allow_gaps: bool,
    retry: float,
    retry_for: float,
) -> tuple[ClientCore, float]:
    """Validate a client's URL and options: its protocol state, and the connect timeout.

    Raises:
        ConfigurationError, InvalidURL.
    """
    idle_timeout = kw.pop("idle_timeout", None)
    reject_unknown(kw, endpoint, CLIENT_OPTIONS)
    if idle_timeout is not None and not isinstance(idle_timeout, (int, float)):
        raise ConfigurationError(f"idle_timeout= for {endpoint.url} must be a number of seconds")
    addr = resolve(endpoint, listening=False)
    core = ClientCore(
        options,
        addr,
        headers=headers,
        last_event_id=last_event_id,
        allow_gaps=allow_gaps,
        retry=retry,
        retry_for=retry_for,
        idle_timeout=None if idle_timeout is None else float(idle_timeout),
    )
    return core, timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT


class ClientChannelBase:
    """The receiving end of an event stream: what both API flavours share.

    It holds the reconnection state and makes the decisions that do not wait: what an error
    means, what a read's bytes do, when to try again and for how long. The drivers own the
    connection (``_drop`` lets it go) and the waiting; ``_clock`` is their clock.
    """

    def __init__(
        self,
        core: ClientCore,
        *,
        connect_timeout: float,
        ssl: ssl_module.SSLContext | None,
        server_hostname: str | None,
        clock: Callable[[], float],
    ) -> None:
        self.url = core.url
        self._core = core
        self._queue = core.queue
        self._connect_timeout = connect_timeout
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._clock = clock
        self._closed = False
        # When reconnecting began, shifted by the time connections were open since (a
        # connection's time is not time spent reconnecting); None: the stream is making
        # progress (a message came since the last connection was lost, or none was lost yet).
        self._lost_at: float | None = None
        self._opened_at = 0.0  # when the connection now open was opened
        self._answered = 0  # connections opened since the last progress (none brought one)
        self._next_attempt: float | None = None
        self._attempted_at = float("-inf")  # when the last connection attempt started
        self._last_failure: BaseException | None = None
        self._peer: PeerInfo | None = None
        self._heard_at = 0.0  # when the connection last brought bytes (the driver's clock)
        self._owner = os.getpid()  # a forked child's copy must not end its parent's stream

    def _drop(self) -> None:
        """Let the connection go (the driver's)."""
        raise NotImplementedError

    # -- one connection ---------------------------------------------------------------------
    def _tls(self) -> tuple[ssl_module.SSLContext, str] | None:
        """The TLS context and server name to connect with (None: plain HTTP)."""
        if not self._core.addr.secure:
            return None
        if self._ssl is None:  # made once (about 20 ms), not at each connection
            self._ssl = ssl_module.create_default_context()
        return self._ssl, self._server_hostname or self._core.addr.host

    def _connect_error(self, exc: OSError) -> IpcwireError:
        """The error for ``exc`` raised while connecting (TCP and TLS)."""
        url = self.url
        if isinstance(exc, ssl_module.SSLCertVerificationError):
            # The server did not prove who it is (untrusted, or naming another host):
            # AuthenticationFailed with the fix, as for tcp+TLS, wss:// and https://.
            return tls_error(exc, url)
        if isinstance(exc, ssl_module.SSLError):
            return ChannelBroken(f"TLS handshake with {url} failed: {exc}", endpoint=url)
        if isinstance(exc, TimeoutError):
            return Timeout(f"connecting to {url} timed out", endpoint=url)
        return translate(exc, url, "connecting to")

    def _answer_error(self, exc: OSError) -> IpcwireError:
        """The error for ``exc`` raised while sending the request or reading the answer."""
        if isinstance(exc, TimeoutError):
            return Timeout(
                f"{self.url} did not answer within {self._connect_timeout} s", endpoint=self.url
            )
        return translate(exc, self.url, "connecting to")

    def _answer(self, buf: bytearray, chunk: bytes) -> tuple[bool, bytes] | None:
        """Take a read of the answer into ``buf``; once its head is whole: whether the stream
        is open (False: the server ended it), and the body bytes read with the head.

        Raises:
            ChannelBroken (closed before answering), and what :meth:`ClientCore.accept_head`
            raises.
        """
        if not chunk:
            raise ChannelBroken(
                f"{self.url} closed the connection before answering", endpoint=self.url
            )
        buf += chunk
        parsed = parse_head(buf, self.url)
        if parsed is None:
            return None
        head, size = parsed
        rest = bytes(buf[size:])
        return self._core.accept_head(head, rest), rest

    def _opened(self, peername: object, rest: bytes) -> None:
        """The stream is open: ``rest`` is its first body bytes, taken as any later read's
        (a body that is not well-formed HTTP drops the connection, which is reconnected:
        what the bytes mean does not depend on which read brought them)."""
        if isinstance(peername, tuple):
            self._peer = PeerInfo(address=f"{peername[0]}:{peername[1]}")
        # Not progress yet (reconnecting goes on counting against retry_for): a server that
        # answers and closes before any event would otherwise be reconnected for ever.
        self._answered += 1
        self._opened_at = self._heard_at = self._clock()
        if rest:
            try:
                self._received(rest)
            except BaseException:
                self._drop()
                raise

    # -- receiving --------------------------------------------------------------------------
    def _closed_error(self) -> ChannelClosed:
        return ChannelClosed(f"{self.url} is closed", endpoint=self.url)

    def _recv_timeout(self, timeout: float | None, doing: str = "") -> Timeout:
        waited = "yet" if timeout == 0 else f"within {timeout} s"  # (as unix:// and tcp:// say)
        return Timeout(f"no message from {self.url} {waited}{doing}", endpoint=self.url)

    def _received(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes read from the connection (none: the server closed it)."""
        if not data:
            self._connection_lost(None)
            return
        self._heard_at = self._clock()
        core = self._core
        try:
            core.feed(data)
        except RemoteProtocolError as exc:
            self._connection_lost(exc)
            return
        if core.progressed():
            self._lost_at = None
            self._answered = 0
        if core.body_done:
            self._connection_lost(None)

    def _silent_at(self) -> float | None:
        """When the open connection is taken as dead if it brings nothing until then."""
        limit = self._core.idle_limit
        return None if limit is None else self._heard_at + limit

    def _silence(self) -> None:
        """The connection brought nothing, not even a keepalive, for too long: drop it and
        reconnect (resuming), as if the server had closed it."""
        limit = self._core.idle_limit
        self._connection_lost(
            ChannelBroken(
                f"{self.url} sent nothing for {limit:g} s, not even a keepalive comment: the "
                f"connection is taken as dead (a frozen server, or a network path that "
                f"dropped it). Set idle_timeout= to wait longer",
                endpoint=self.url,
            )
        )

    def _connection_lost(self, exc: BaseException | None) -> None:
        self._drop()
        if self._core.final is not None or self._closed:
            return
        log.info("lost the event stream %s (%s); reconnecting", self.url, exc or "closed")
        self._last_failure = exc
        now = self._clock()
        if self._core.progressed():  # (messages parsed before a protocol error)
            self._lost_at = None
            self._answered = 0
        if self._lost_at is None:
            self._lost_at = now
        else:  # a connection that brought no message: reconnecting goes on, its time aside
            self._lost_at += now - self._opened_at
        self._next_attempt = None

    def _more(self, out: list[Any], max_messages: int | None) -> list[Any]:
        """``out`` and the messages parsed already after it (for ``recv_many``)."""
        core = self._core
        try:
            while core.has_message() and (max_messages is None or len(out) < max_messages):
                out.append(core.pop())
        except IndexError:
            pass  # a recv() in another thread took the last one
        return out

    # -- reconnecting -----------------------------------------------------------------------
    def _attempt_wait(self, now: float, deadline: float | None, timeout: float | None) -> float:
        """Seconds to wait before the next connection attempt; 0: attempt now, within
        :meth:`_attempt_deadline`.

        Raises:
            ChannelBroken: reconnecting failed for ``retry_for`` seconds.
            Timeout: the caller's deadline passed first.
        """
        core = self._core
        if self._lost_at is None:
            self._lost_at = now
        if self._next_attempt is None:
            if now - self._lost_at > core.retry_for:
                failure = self._last_failure
                why = str(failure) if failure else "no answer"
                if failure is None and self._answered:
                    why = "the server closed the stream"
                raise core.give_up(why, failure, answered=self._answered)
            # The server's retry: (or the backoff) may be longer than what is left of
            # retry_for: then the last attempt is made when retry_for runs out (an attempt
            # due by then is made, however late the caller comes to make it).
            self._next_attempt = min(now + core.next_delay(), self._lost_at + core.retry_for)
        wait = self._next_attempt - now
        if wait > 0:
            if deadline is not None:
                if deadline <= now:
                    raise self._recv_timeout(timeout, " (reconnecting)")
                wait = min(wait, deadline - now)
            return wait
        if (
            deadline is not None
            and timeout is not None
            and deadline <= now
            and self._attempted_at >= deadline - timeout
        ):
            # Past its deadline, a call that made an attempt makes no more (each attempt
            # that succeeds makes the next one due at once after a server's retry: 0); a
            # call that comes late still makes the attempt that is due.
            raise self._recv_timeout(timeout, " (reconnecting)")
        self._next_attempt = None
        return 0.0

    def _attempt_deadline(self, now: float, deadline: float | None) -> float:
        """When a connection attempt started ``now`` gives up (the attempt is noted)."""
        self._attempted_at = now
        limit = self._connect_timeout
        if deadline is not None:
            limit = min(limit, max(deadline - now, 0.001))
        return now + limit

    def _attempt_failed(self, exc: ChannelBroken | Timeout) -> None:
        """A connection attempt failed in a way worth retrying."""
        if self._closed:
            raise self._closed_error() from None
        self._last_failure = exc

    # -- the rest ---------------------------------------------------------------------------
    def _release(self) -> Release | None:
        """On close(): the DELETE telling the server this client is done with its stream, so
        that it ends it now instead of keeping it for a resume that will not come (None:
        nothing to tell; see :mod:`~ipcwire.sse._release`)."""
        sid = Release.needed(self._core)
        if sid is None or os.getpid() != self._owner:
            return None
        try:
            return Release(self._core, sid, self._tls())
        except (OSError, ValueError) as exc:  # a default TLS context that cannot be made
            log.debug("%s: not releasing stream %s: %s", self.url, sid, exc)
            return None

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

    @property
    def last_event_id(self) -> str:
        """The event id of the last message ``recv()``/``recv_many()`` returned (the stream's
        ``<stream>-0`` before the first): pass it as ``last_event_id=`` to a client that
        takes over after this one stopped, and it gets every message this one did not take.
        (This client's own reconnection resumes from the last event it read, which may be
        further: the messages in between are in its queue.)"""
        return self._core.last_taken_id

    @property
    def retry(self) -> float:
        """The reconnection delay in force, in seconds (the server's ``retry:`` if sent)."""
        return self._core.retry_seconds

    def statistics(self) -> ChannelStatistics:
        core = self._core
        return ChannelStatistics(
            messages_sent=0,
            messages_received=core.received,
            bytes_sent=0,
            bytes_received=core.bytes_received,
            buffered_bytes=0,
            dropped=core.dropped,
        )
