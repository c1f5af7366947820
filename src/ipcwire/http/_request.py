"""What a request to the HTTP server brings, read and checked; each failure a ``Problem``.

A body is read within its size limit (413) and the idle timeout (408), split into messages
if it is a batch, and decoded by the endpoint's codec (400, 415); the waits a request asks
for (``Ipcwire-Timeout``, ``Ipcwire-Reply``, ``?wait=``) are read as seconds (400), a long
poll's at most ``MAX_POLL_WAIT``. This is the parsing of requests, apart from ``_server.py``,
which routes them, and ``_endpoints.py``, which answers them from the sessions: the server's
``Problem`` handler turns what is raised here into the problem document the client sees.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from ipcwire._core.codecs import BytesCodec, Codec
from ipcwire._core.wire import checked_decode
from ipcwire.aio._timeouts import within
from ipcwire.errors import IpcwireError
from ipcwire.http._frames import FrameSplitter
from ipcwire.http._protocol import (
    BATCH_TYPE,
    MAX_POLL_WAIT,
    REPLY_HEADER,
    TIMEOUT_HEADER,
    Problem,
    media_type_matches,
)

__all__ = ["RequestReader", "Undecodable", "asked_wait", "reply_wait", "seconds"]


class Undecodable:
    """A channel's message that did not decode, in its place in the inbox: receiving it
    raises ``error`` (RemoteProtocolError naming the endpoint); the next one comes after."""

    __slots__ = ("error",)

    def __init__(self, error: IpcwireError) -> None:
        self.error = error


def _too_large(size: int, limit: int, *, exact: bool) -> Problem:
    """413 for a body of ``size`` bytes (``exact``: its Content-Length; else what was read
    when it passed ``limit``)."""
    what = f"{size} bytes, over" if exact else "over"
    return Problem(
        413, "too_large", f"the body is {what} the limit of {limit} bytes", size=size, limit=limit
    )


class RequestReader:
    """Reads the bodies of one endpoint's requests: its codec, its media type ``ctype``, at
    most ``max_frame`` bytes a message and ``max_batch`` a batch, and no more than ``idle``
    seconds without a byte of the body (``handshake_timeout``)."""

    def __init__(
        self,
        codec: Codec,
        ctype: str,
        *,
        max_frame: int,
        max_batch: int,
        idle: float,
        url: str,
    ) -> None:
        self._codec = codec
        # a channel's message that does not decode is delivered as this error, in its place
        self._checked = checked_decode(codec, url)
        # ipcwire's own raw codec: a body is the message as it is (a subclass's decode must run)
        self._raw = type(codec) is BytesCodec
        self._ctype = ctype
        self._max_frame = max_frame
        self._max_batch = max_batch
        self._idle = idle

    async def _more(self, content: Any) -> bytes:
        """The next bytes of a request body (what is already here, at no wait), ``b""`` at
        its end. A client that sends none for ``handshake_timeout`` gets 408: a stalled or
        vanished client must not hold its request (and its channel's) for ever, as a
        request head may not (``keepalive_timeout`` in ``HttpServer.start``)."""
        chunk: bytes = content.read_nowait(-1)
        if chunk:
            return chunk
        idle = self._idle
        try:
            async with within(idle):
                chunk = await content.readany()
        except TimeoutError:
            raise Problem(408, "timeout", f"no part of the body came within {idle} s") from None
        return chunk

    async def body(self, request: web.BaseRequest, limit: int) -> bytes:
        n = request.content_length
        content = request.content
        if n is not None:
            if n > limit:
                raise _too_large(n, limit, exact=True)
            if not n:
                return b""
            data: bytes = content.read_nowait(n)
            if len(data) == n:  # the whole body came with the head
                return data
            parts = [data]
            got = len(data)
            while got < n:  # (the parser gives no more than Content-Length)
                chunk = await self._more(content)
                if not chunk:
                    raise Problem(400, "malformed", "the body is shorter than its Content-Length")
                parts.append(chunk)
                got += len(chunk)
            return b"".join(parts)
        buf = bytearray()
        while True:
            chunk = await self._more(content)
            if not chunk:
                return bytes(buf)
            buf += chunk
            if len(buf) > limit:
                raise _too_large(len(buf), limit, exact=False)

    def _decode(self, data: bytes | memoryview) -> tuple[Any, int]:
        if self._raw and type(data) is bytes:
            return data, len(data)
        try:
            return self._codec.decode(memoryview(data)), len(data)
        except Exception as exc:
            raise Problem(
                400, "malformed", f"the body is not valid {self._codec.name}: {exc}"
            ) from None

    def _in_place(self, data: bytes | memoryview) -> tuple[Any, int]:
        """A channel's message decoded; one that does not decode becomes an
        :class:`Undecodable` in its place (its receiver gets the error, then the next one),
        as on every other mechanism: a 400 for the whole body lost the good messages with it,
        and broke the client's channel."""
        if self._raw and type(data) is bytes:
            return data, len(data)
        try:
            return self._checked(memoryview(data)), len(data)
        except IpcwireError as exc:
            return Undecodable(exc), len(data)

    async def messages(self, request: web.BaseRequest) -> list[tuple[Any, int]]:
        """The messages a channel's POST brings (a body that is not of the codec's or the
        batch's media type is 415; one that is not the codec's format is each message's
        error, in its place)."""
        ctype = request.headers.get("Content-Type")
        if ctype is None or ctype == self._ctype:  # one message (the common case, in short)
            return [self._in_place(await self.body(request, self._max_frame))]
        if ctype.partition(";")[0].strip().lower() == BATCH_TYPE:
            return [self._in_place(p) for p in await self._batch(request)]
        self._check_type(ctype)
        return [self._in_place(await self.body(request, self._max_frame))]

    async def _batch(self, request: web.BaseRequest) -> list[bytes]:
        """The messages of a batch body, split as its chunks arrive (each message's bytes
        copied once, as reading a plain body copies them)."""
        limit = self._max_batch
        n = request.content_length
        if n is not None and n > limit:
            raise _too_large(n, limit, exact=True)
        splitter = FrameSplitter(self._max_frame, "the client")
        content = request.content
        total = 0
        try:
            while True:
                chunk = await self._more(content)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise _too_large(total, limit, exact=False)
                splitter.feed(chunk)
        except IpcwireError as exc:
            raise Problem(400, "malformed", str(exc)) from None
        if splitter.partial:
            raise Problem(400, "malformed", "a batch from the client ends inside a frame")
        return splitter.out

    def _check_type(self, ctype: str | None) -> None:
        if not media_type_matches(ctype, self._codec):
            raise Problem(
                415,
                "media_type",
                f"this endpoint speaks {self._codec.name}: send Content-Type: {self._ctype} "
                f"(got {ctype})",
            )

    def decode_one(self, body: bytes, request: web.BaseRequest) -> tuple[Any, int]:
        self._check_type(request.headers.get("Content-Type"))
        return self._decode(body)


def seconds(raw: str, header: str) -> float:
    """A header's value in seconds (0 or more).

    Raises:
        Problem: 400, the value is not a number of seconds.
    """
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:  # also refuses NaN
        raise Problem(400, "malformed", f"{header} must be seconds, not {raw!r}")
    return value


def asked_wait(request: web.BaseRequest, default: float | None) -> float | None:
    """How long the request lets the server wait (its ``Ipcwire-Timeout``), else ``default``."""
    raw = request.headers.get(TIMEOUT_HEADER)
    return default if raw is None else seconds(raw, TIMEOUT_HEADER)


def reply_wait(raw: str) -> float:
    """How long a send asks the server to wait for its reply (``Ipcwire-Reply``), at most
    ``MAX_POLL_WAIT``."""
    return min(seconds(raw, REPLY_HEADER), MAX_POLL_WAIT)
