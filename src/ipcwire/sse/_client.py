"""What the blocking and asyncio SSE clients share, without I/O.

The request, the checks of the response head, the body decoding (chunked or not), the event
parsing, the handling of ipcwire's gap and end events, and the reconnection schedule:

* reconnect after ``retry`` seconds (what the server's ``retry:`` field says, else the
  ``retry=`` option), then back off exponentially with jitter while attempts fail, up to
  ``retry_for`` seconds in all, after which the channel is broken. Only progress (a message
  received) resets the backoff and that budget: a server that answers 200 and closes the
  stream before any event is an attempt that failed, not a connection that worked;
* a gap (events the server could not replay) breaks the channel by default, because a
  reliable channel cannot silently skip messages; with ``allow_gaps=True`` the loss is
  counted in ``statistics().dropped``, logged, and delivery goes on;
* an ``ipcwire-end`` event or a 204 response ends the channel (``EndOfChannel``);
* an ``ipcwire-taken`` event (another client resumed this stream and took it over) or a 409
  response breaks it (``ChannelBroken``) without reconnecting: taking the stream back would
  only have the other client take it back in turn, for ever.
"""

from __future__ import annotations

import logging
import random
import secrets
import urllib.parse
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import msgspec

from ipcwire._core.codecs import DECODE_ERRORS, BytesCodec
from ipcwire._core.ending import failed_error
from ipcwire._core.framing import MAX_REASON, readable_reason
from ipcwire._core.handshake import same_secret
from ipcwire._core.url import Endpoint
from ipcwire._core.wire import checked_decode
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    HandshakeError,
    InvalidURL,
    IpcwireError,
    PermissionDenied,
    RemoteProtocolError,
)
from ipcwire.options import ChannelOptions
from ipcwire.sse._delivered import Delivered
from ipcwire.sse._events import (
    END_EVENT,
    GAP_EVENT,
    TAKEN_EVENT,
    Event,
    EventParser,
    RunShape,
    decode_data,
    parse_id,
    taken_from,
)
from ipcwire.sse._http import (
    ChunkedDecoder,
    IdentityDecoder,
    ResponseHead,
    build_request,
    shown_path,
)
from ipcwire.sse._server import (
    CODEC_HEADER,
    ERROR_HEADER,
    FAILED_HEADER,
    KEEPALIVE_HEADER,
    MAX_FRAME_HEADER,
    NONCE_HEADER,
    PROOF_HEADER,
    proof,
)
from ipcwire.tcp._socket import resolve as check_host  # (its host name check)

__all__ = ["FATAL", "ClientCore", "Raise", "SseAddress", "resolve"]

log = logging.getLogger("ipcwire")

DEFAULT_RETRY: Final = 1.0
DEFAULT_RETRY_FOR: Final = 60.0
MAX_BACKOFF: Final = 30.0
# A connection that brought nothing for this many of the server's keepalive intervals (its
# KEEPALIVE_HEADER) is taken as dead: a half-open TCP connection (the server's host gone,
# a NAT that forgot it) would otherwise leave the client waiting forever.
SILENT_INTERVALS: Final = 3

# Errors a reconnecting client must not retry: the server refused it for good.
FATAL: Final = (AuthenticationFailed, PermissionDenied, HandshakeError, RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class SseAddress:
    """Where an event stream is."""

    secure: bool
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    def url(self, port: int) -> str:
        scheme = "sse+https" if self.secure else "sse+http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{port}{shown_path(self.path)}"


def resolve(endpoint: Endpoint, *, listening: bool) -> SseAddress:
    """``sse+http://host:port/path`` (``sse+https://`` for TLS).

    Raises:
        InvalidURL: no host to connect to, or no port to listen on.
    """
    secure = endpoint.scheme == "sse+https"
    host = endpoint.host
    if not host:
        if not listening:
            raise InvalidURL(f"{endpoint.url} has no host", endpoint=endpoint.url)
        host = "127.0.0.1"
    port = endpoint.port
    if port is None:
        if listening:
            raise InvalidURL(
                f"{endpoint.url} has no port to listen on; write sse+http://{host}:8080"
                f"{endpoint.path or '/'} (or port 0 for any free port)",
                endpoint=endpoint.url,
            )
        port = 443 if secure else 80
    check_host(replace(endpoint, host=host, port=port), listening=True)
    return SseAddress(secure, host, port, endpoint.path or "/")


def _silence_limit(announced: str | None) -> float | None:
    """How long a connection may bring nothing: a few of the keepalive intervals the server
    announced (None: it announced none, or nonsense)."""
    try:
        keepalive = float(announced) if announced else 0.0
    except ValueError:
        return None
    if not 0 < keepalive < 1e6:
        return None
    return SILENT_INTERVALS * keepalive


class Raise:
    """An error in the queue, raised in the place of the message that could not be had."""

    __slots__ = ("exc",)

    def __init__(self, exc: IpcwireError) -> None:
        self.exc = exc


class ClientCore:
    """One client's protocol state across its successive HTTP connections."""

    def __init__(
        self,
        options: ChannelOptions,
        addr: SseAddress,
        *,
        headers: Mapping[str, str] | None,
        last_event_id: str | None,
        allow_gaps: bool,
        retry: float,
        retry_for: float,
        idle_timeout: float | None = None,
    ) -> None:
        if not retry >= 0 or not retry_for >= 0:  # (NaN too: it would never give up)
            raise ConfigurationError(f"retry= and retry_for= for {options.url} must be >= 0")
        if idle_timeout is not None and not 0 < idle_timeout < 1e9:
            raise ConfigurationError(
                f"idle_timeout= for {options.url} must be > 0 seconds (or None: "
                f"{SILENT_INTERVALS}x the keepalive interval an ipcwire server announces)"
            )
        self.url = options.url
        self.addr = addr
        self.options = options
        self._decode = checked_decode(options.codec, options.url)  # (errors name the URL)
        # ipcwire's own raw codec, whose decode is bytes(): skip it (not a subclass's)
        self._plain = type(options.codec) is BytesCodec
        self._text = options.codec.name == "json"
        self._shape: RunShape | None = None  # the usual shape of the current stream's events
        max_data = options.max_frame if self._text else (options.max_frame + 2) // 3 * 4
        self.parser = EventParser(max_data, last_id=last_event_id or "")
        self.headers = dict(headers or {})  # the application's extra request headers
        self.allow_gaps = allow_gaps
        self.retry = retry
        self.retry_for = retry_for
        self.idle_timeout = idle_timeout
        # Seconds of silence after which the connection is taken as dead (None: never).
        self.idle_limit: float | None = idle_timeout
        self.queue: deque[Any] = deque()
        self.final: IpcwireError | None = None  # raised once the queue is empty
        self._body: ChunkedDecoder | IdentityDecoder = IdentityDecoder()
        self._nonce = ""
        self.attempt = 0
        self._queued = 0  # messages put in the queue
        self._items = 0  # messages and errors put in the queue (less those thrown away)
        # The event ids the queue's items reach: ``last_event_id`` is the last taken one's.
        self.delivered = Delivered(last_event_id or "")
        self._progress_mark = 0  # _queued when progressed() last said so
        self._errors = 0  # errors in the queue now
        self.bytes_received = 0
        self.dropped = 0
        self.stream_id: str | None = None
        # The server is done with the stream (it ended it, or gave it to another client), or
        # this client gave up on it: close() has nothing to tell the server (see _release).
        self.stream_over = False
        # It read the server's end event: it has every event, and the server keeps the
        # ended stream only for a client that lost its end (close() lets it go: _release).
        self.end_read = False
        # The stream and sequence number of the last event, to notice skipped ids.
        resumed = parse_id(last_event_id) if last_event_id else None
        self._stream: str | None = resumed[0] if resumed else None
        self._last_seq = resumed[1] if resumed else 0

    # -- a connection -----------------------------------------------------------------------
    def request(self) -> bytes:
        """The GET request for the next connection (resuming from the last event ID)."""
        opts = self.options
        headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            "User-Agent": "ipcwire",
            CODEC_HEADER: opts.codec.name,
            MAX_FRAME_HEADER: str(opts.max_frame),
        }
        if self.parser.last_id:
            headers["Last-Event-ID"] = self.parser.last_id
        if opts.token is not None:
            self._nonce = secrets.token_hex(16)
            headers["Authorization"] = "Bearer " + opts.token.decode()
            headers[NONCE_HEADER] = self._nonce
        headers.update(self.headers)
        return build_request(self.addr.host_header, self.addr.path, headers)

    def accept_head(self, head: ResponseHead, body: bytes) -> bool:
        """Check a response head; True if the stream is open (False: the server ended it).

        Raises:
            AuthenticationFailed, PermissionDenied, HandshakeError, ConnectionRefused,
            RemoteProtocolError: the server refused, or is not an event stream.
        """
        url = self.url
        if head.status == 204:
            failed = urllib.parse.unquote(head.get(FAILED_HEADER) or "")
            self.final = (
                failed_error(url, readable_reason(failed.encode()[:MAX_REASON]), url)
                if failed
                else EndOfChannel(f"{url} ended this stream (HTTP 204)", endpoint=url)
            )
            self.stream_over = True
            return False
        if head.status == 409:  # resumed with a taken event's id: for good, not retried
            self.final = self._refusal(head, body)
            self.stream_over = True
            return False
        if head.status != 200:
            raise self._refusal(head, body)
        ctype = (head.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "text/event-stream":
            raise RemoteProtocolError(
                f"{url} answered with {ctype or 'no content type'}, not text/event-stream: is "
                f"this the event stream's URL?",
                endpoint=url,
            )
        codec = head.get(CODEC_HEADER)
        if codec is not None and codec != self.options.codec.name:
            raise HandshakeError(
                f"{url} sends codec={codec!r}, this client codec={self.options.codec.name!r}; "
                f"use the same codec on both sides",
                endpoint=url,
            )
        token = self.options.token
        if token is not None and not same_secret(head.get(PROOF_HEADER), proof(token, self._nonce)):
            raise AuthenticationFailed(
                f"{url} did not prove that it knows the token; refusing its events. Give "
                f"the server the same token=",
                endpoint=url,
            )
        sid = head.get("x-ipcwire-stream")
        if sid and sid != self._stream:  # a new stream: its first event is number 1
            self._stream, self._last_seq = sid, 0
        self.stream_id = sid or self.stream_id
        if sid and not self.parser.last_id:
            # The resume point of a new stream is in its head too: a connection that drops
            # before its first bytes (id <stream>-0) were read still resumes this stream.
            self.parser.last_id = f"{sid}-0"
            self.delivered.at(self._items, self.parser.last_id)
        self.idle_limit = self.idle_timeout or _silence_limit(head.get(KEEPALIVE_HEADER))
        chunked = "chunked" in (head.get("transfer-encoding") or "").lower()
        self._body = ChunkedDecoder(url) if chunked else IdentityDecoder()
        self.parser.new_connection()
        return True

    def _refusal(self, head: ResponseHead, body: bytes) -> IpcwireError:
        url = self.url
        detail = head.get(ERROR_HEADER)
        text = body.decode(errors="replace").strip()[:500] or head.reason
        if detail:
            try:
                text = str(msgspec.json.decode(detail.encode()).get("error", text))
            except (msgspec.DecodeError, AttributeError):
                pass
        msg = f"{url} refused the event stream (HTTP {head.status}): {text}"
        if head.status == 401:
            return AuthenticationFailed(msg, endpoint=url)
        if head.status == 403:
            return PermissionDenied(msg, endpoint=url)
        if head.status == 400 and "codec" in text:
            return HandshakeError(msg, endpoint=url)
        if head.status in (404, 503):
            return ConnectionRefused(msg, endpoint=url)
        if head.status == 409:
            return ChannelBroken(msg, endpoint=url)
        return RemoteProtocolError(msg, endpoint=url)

    @property
    def body_done(self) -> bool:
        """The server finished the response (chunked end): the connection is over."""
        return self._body.done

    # -- events -----------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Body bytes from the connection: parse them into the queue."""
        body = self._body.feed(data)
        parser = self.parser
        self.delivered.prune(self._items - len(self.queue))
        stream = self._stream
        if stream is not None and parser.clean():
            # The fast path: a whole read of events in the usual shape, numbered on from the
            # last one, goes to the queue without per-event objects or checks in Python.
            shape = self._shape
            if shape is None or shape.stream != stream:
                shape = self._shape = RunShape(stream, not self._text)
            datas = parser.match_run(body, shape, self._last_seq + 1)
            if datas is not None:
                if self._plain:
                    payloads = datas
                else:
                    try:
                        payloads = list(map(self._decode, datas))
                    except Exception:
                        payloads = None  # the general path queues the error in its place
                if payloads is not None:
                    parser.commit_run()
                    n = len(datas)
                    self._last_seq += n
                    self.queue.extend(payloads)
                    self._queued += n
                    self._items += n
                    self.delivered.run(self._items, n, stream, self._last_seq - n + 1)
                    self.bytes_received += sum(map(len, datas))
                    return
            body = b""  # in the parser's buffer already
        for ev in parser.feed(body):
            self._event(ev)

    def _end_error(self, data: bytes) -> IpcwireError:
        """The end event's meaning: a clean end, or one after an error on the server
        (``failed``: the exception's type, never its text)."""
        try:
            said = msgspec.json.decode(data)
        except DECODE_ERRORS:
            said = None
        failed = said.get("failed") if isinstance(said, dict) else None
        if isinstance(failed, str) and failed:
            reason = readable_reason(failed.encode()[:MAX_REASON])
            return failed_error(self.url, reason, self.url)
        return EndOfChannel(f"{self.url} closed the stream", endpoint=self.url)

    def _event(self, ev: Event) -> None:
        if ev.type == GAP_EVENT:
            self._gap(ev)
            self._position(ev.id)
            self.delivered.at(self._items, ev.id)
            return
        if ev.type == END_EVENT:
            self.final = self._end_error(ev.data)
            self.stream_over = self.end_read = True
            return
        if ev.type == TAKEN_EVENT:
            self._taken(ev.id)
            return
        # An event without an id: field of its own (a server other than ipcwire's may give
        # ids to some events only) carries the last event's id: it is no repeat of that one
        skipped = self._position(ev.id) if ev.has_id else 0
        if skipped < 0:
            return  # a duplicate of an event already delivered
        if skipped > 0:  # ids jumped without a gap event: still never silent
            self._gap_found(skipped, "event ids skipped without a gap event")
        if ev.oversize:
            limit = self.options.max_frame
            size = ev.oversize if self._text else ev.oversize * 3 // 4
            self._fail(
                FrameTooLarge(
                    f"an event from {self.url} is about {size} bytes, over the limit of "
                    f"{limit} bytes; it was skipped. Raise max_frame= on both sides",
                    size=max(size, limit + 1),
                    limit=limit,
                    endpoint=self.url,
                )
            )
            self.delivered.at(self._items, ev.id)
            return
        try:
            payload = decode_data(ev.data, self._text)
            self.queue.append(self._decode(payload))
        except IpcwireError as exc:
            self._fail(exc)
            self.delivered.at(self._items, ev.id)
            return
        except Exception as exc:  # a codec's own error (JSON that is not UTF-8, say)
            err = RemoteProtocolError(
                f"{self.url} sent an event that is not valid {self.options.codec.name} "
                f"({exc}); it was skipped",
                endpoint=self.url,
            )
            err.__cause__ = exc
            self._fail(err)
            self.delivered.at(self._items, ev.id)
            return
        self._queued += 1
        self._items += 1
        self.delivered.at(self._items, ev.id)
        self.bytes_received += len(payload)

    def _position(self, event_id: str) -> int:
        """Track ``<stream>-<seq>`` ids: how many events were skipped before this one (-1 for
        a repeat). Ids that are not ipcwire's are not checked, nor is any id from a server
        that did not say it is ipcwire's (``X-Ipcwire-Stream``): another server's ids may
        look like ``<stream>-<seq>`` (``order-5``) and mean something else."""
        if self.stream_id is None:
            return 0
        stream = self._stream
        if stream is not None and event_id.startswith(stream):  # the usual case, quickly
            tail = event_id[len(stream) :]
            if tail[:1] == "-" and tail[1:].isascii() and tail[1:].isdigit() and len(tail) <= 19:
                seq = int(tail[1:])
                last = self._last_seq
                if seq <= last:
                    return -1
                self._last_seq = seq
                return seq - last - 1
        parsed = parse_id(event_id)
        if parsed is None:
            return 0
        stream, seq = parsed
        known = self._last_seq if stream == self._stream else None
        self._stream, self._last_seq = stream, max(seq, known or 0)
        if known is None:
            return 0
        if seq <= known:
            return -1
        return seq - known - 1

    def _taken(self, event_id: str) -> None:
        """Another client resumed this stream and the server gave it the stream: stop, for
        good (its messages received so far are delivered first)."""
        was = taken_from(event_id)
        if was is not None:
            self.parser.last_id = was  # where this client is, not the mark
        last = self.parser.last_id or "none"
        self.stream_over = True  # another client's now: close() must not end it
        self.final = ChannelBroken(
            f"another client resumed the event stream {self.url} (stream "
            f"{self.stream_id or self._stream}, with its Last-Event-ID) and took it over from "
            f"this one, which stops here (last event id {last}); a stream has one reader. "
            f"Give each reader its own stream: connect without last_event_id= (each client "
            f"gets its own accept() on the server), and resume only the id of a client that "
            f"has stopped; a forked or copied client should connect anew",
            endpoint=self.url,
        )

    def _gap_found(self, lost: int, reason: str) -> None:
        self.dropped += lost
        text = f"{self.url}: {lost} events this client should have got are missing ({reason})"
        if self.allow_gaps:
            log.warning("%s (allow_gaps=True: going on)", text)
            return
        self._fail(ChannelBroken(text, endpoint=self.url))

    def _gap(self, ev: Event) -> None:
        try:
            info = msgspec.json.decode(ev.data)
        except DECODE_ERRORS:
            info = {}
        lost = info.get("lost", -1) if isinstance(info, dict) else -1
        reason = info.get("reason", "") if isinstance(info, dict) else ""
        known = isinstance(lost, int) and lost >= 0
        what = f"{lost} events" if known else "events"
        text = f"{self.url} could not replay {what} this client missed: {reason}"
        if known:
            self.dropped += lost
        if self.allow_gaps:
            log.warning("%s (allow_gaps=True: going on)", text)
            return
        self._fail(
            ChannelBroken(
                f"{text}. The channel is broken because messages were lost; connect again "
                f"for a fresh stream, or pass allow_gaps=True to count losses and go on",
                endpoint=self.url,
            )
        )

    def _fail(self, exc: IpcwireError) -> None:
        """Queue an error in the place of a message."""
        self.queue.append(Raise(exc))
        self._errors += 1
        self._items += 1

    @property
    def received(self) -> int:
        """Messages taken from the queue (the channels pop it directly; nothing counts)."""
        return self._queued - (len(self.queue) - self._errors)

    @property
    def last_taken_id(self) -> str:
        """The event id of the last message taken from the queue (``last_event_id``): where
        an application that took no more should resume. The parser's ``last_id`` is how far
        the wire was read, which the client's own reconnection resumes from."""
        return self.delivered.last(self._items - len(self.queue))

    def has_message(self) -> bool:
        """Whether a message (not an error) is next in the queue."""
        return bool(self.queue) and type(self.queue[0]) is not Raise

    def pop(self) -> Any:
        """The next message (raising the queued error in its place)."""
        item = self.queue.popleft()
        if type(item) is Raise:
            self._errors -= 1
            if isinstance(item.exc, ChannelBroken):
                self.final = item.exc  # broken for good
                self._queued -= len(self.queue) - self._errors  # never received
                self._items -= len(self.queue)
                self.delivered.forget_after(self._items)
                self.queue.clear()
                self._errors = 0
            raise item.exc
        return item

    # -- reconnecting -----------------------------------------------------------------------
    def progressed(self) -> bool:
        """Whether a message reached the queue since the last call; if so the backoff starts
        over. A 200 alone is no progress: a server (or proxy) that answers and closes before
        any event would otherwise be reconnected at the first delay, for ever."""
        if self._queued == self._progress_mark:
            return False
        self._progress_mark = self._queued
        self.attempt = 0
        return True

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt (the server's retry, then backoff)."""
        server = self.parser.retry
        base = server / 1000 if server is not None else self.retry
        if self.attempt == 0:
            delay = base
        else:
            ceiling = min(max(base, 0.05) * (2**self.attempt), max(MAX_BACKOFF, base))
            delay = random.uniform(ceiling / 2, ceiling)
        self.attempt += 1
        return delay

    @property
    def retry_seconds(self) -> float:
        """The reconnection delay in force (the server's ``retry:`` if it sent one)."""
        server = self.parser.retry
        return server / 1000 if server is not None else self.retry

    def give_up(self, why: str, cause: BaseException | None, *, answered: int) -> ChannelBroken:
        """The channel is broken: reconnecting failed for ``retry_for`` seconds
        (``answered``: connections the server answered in that time, none bringing an
        event)."""
        url = self.url
        if answered:
            fix = (
                f"; {url} answered {answered} of the attempts but ended each stream before "
                f"its first event: the server (or a proxy in front of it) drops the stream "
                f"at once, see its log. retry_for= counts the time spent reconnecting since "
                f"the last event received"
            )
        else:
            fix = "; is the server running and answering? A larger retry_for= tries longer"
        err = ChannelBroken(
            f"lost the event stream {url} and could not reconnect within "
            f"{self.retry_for} s (retry_for=): {why}{fix}",
            endpoint=url,
        )
        err.__cause__ = cause
        self.final = err
        self.stream_over = True
        return err
