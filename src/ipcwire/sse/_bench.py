"""aiohttp used directly, as the ``ipcwire bench`` baselines of Server-Sent Events:
``raw/sse+http`` and ``raw/sse+http/asyncio`` (the ids ipcwire's sse+http rows compare with).

The same server library as ipcwire's listener (aiohttp's low-level ``web.Server``) streaming
``text/event-stream`` with nothing on top: each message is one event, ``data: <base64>`` and
a blank line (no ids, no replay buffer, no handshake headers). As in ipcwire's rows the
listening side sends and the client receives, and only throughput is measured (SSE is
one-way).

* blocking: aiohttp serves in a loop in a background thread (it has no other way to run);
  ``send`` appends the event to a bounded outbox under a lock and wakes the connection's
  writer only when it is idle; the writer writes everything queued (up to 256 KiB) in one
  ``response.write``. The client is the standard library's ``http.client`` reading the
  chunked body with ``read1`` and splitting events on blank lines.
* asyncio: ``send`` is ``await response.write(event)`` in the serving loop, as aiohttp's
  documentation streams a response; the client is aiohttp's ``ClientSession`` reading
  ``response.content.readany()``.

Imported by the bench (listed in ``CONTENDER_MODULES``); registers its contenders.
"""

from __future__ import annotations

import asyncio
import binascii
import http.client
import queue
import threading
from collections import deque
from typing import Any, Final

from ipcwire.aio._read_size import bound_reads
from ipcwire.bench.contender import Contender, Task, register_contender

__all__ = ["CONTENDERS", "EventSplitter"]

_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_OUTBOX_EVENTS: Final = 1024  # queued events a blocking sender may be ahead (ipcwire: 1024)
_OUTBOX_BYTES: Final = 16 * 1024 * 1024  # ... and bytes (ipcwire's replay_bytes default)
_WRITE_LIMIT: Final = 256 * 1024  # bytes per response.write of queued events
_SHUTDOWN: Final = 2.0


def _event(payload: bytes) -> bytes:
    """One message as one event: ``data: <base64>`` and the blank line that dispatches it."""
    return b"data: " + binascii.b2a_base64(payload, newline=False) + b"\n\n"


class EventSplitter:
    """A bare ``text/event-stream`` reader: events end at a blank line; their ``data:``
    lines (joined with LF) are base64; comments and other fields are skipped."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        blocks = (self._buf + chunk).split(b"\n\n")
        self._buf = blocks.pop()
        out = []
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:  # the usual one-line event
                out.append(binascii.a2b_base64(block[6:]))
                continue
            data = [
                line[6:] if line[5:6] == b" " else line[5:]
                for line in block.split(b"\n")
                if line[:5] == b"data:"
            ]
            if data:
                out.append(binascii.a2b_base64(b"\n".join(data)))
        return out


# -- blocking ---------------------------------------------------------------------------------
class _Outbox:
    """Events handed from the sending thread to the connection's writer in the serving loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.cond = threading.Condition()
        self.events: deque[bytes] = deque()
        self.nbytes = 0
        self.done = False
        self.writer_waiting = False
        self.ready = asyncio.Event()  # used in the serving loop only

    def put(self, event: bytes) -> None:
        """Queue one event (sending thread); waits while the outbox is full."""
        with self.cond:
            while self.events and (
                len(self.events) >= _OUTBOX_EVENTS or self.nbytes + len(event) > _OUTBOX_BYTES
            ):
                self.cond.wait()
            self.events.append(event)
            self.nbytes += len(event)
            wake = self.writer_waiting
            self.writer_waiting = False
        if wake:
            self.loop.call_soon_threadsafe(self.ready.set)

    def finish(self) -> None:
        with self.cond:
            self.done = True
            wake = self.writer_waiting
            self.writer_waiting = False
        if wake:
            self.loop.call_soon_threadsafe(self.ready.set)

    def take(self) -> tuple[bytes, bool]:
        """What to write next (serving loop), and whether the stream is over."""
        with self.cond:
            events = self.events
            if not events:
                if not self.done:
                    self.ready.clear()
                    self.writer_waiting = True
                return b"", self.done
            parts = [events.popleft()]
            size = len(parts[0])
            while events and size + len(events[0]) <= _WRITE_LIMIT:
                ev = events.popleft()
                parts.append(ev)
                size += len(ev)
            self.nbytes -= size
            self.cond.notify_all()
        return b"".join(parts), False


class _Link:
    """The sending end (blocking): one client's event stream."""

    def __init__(self, outbox: _Outbox) -> None:
        self._outbox = outbox
        self._put = outbox.put

    def send(self, message: bytes) -> None:
        self._put(_event(message))

    def recv(self) -> bytes:  # pragma: no cover - SSE is one-way
        raise RuntimeError("the server side of an event stream does not receive")

    def close(self) -> None:
        self._outbox.finish()


async def _serve_stream(request: Any, outbox: _Outbox, accepted: Any) -> Any:
    from aiohttp import web

    response = web.StreamResponse(headers=_HEADERS)
    await response.prepare(request)
    accepted(outbox)
    while True:
        chunk, done = outbox.take()
        if chunk:
            await response.write(chunk)
        elif done:
            break
        else:
            await outbox.ready.wait()
    try:
        await response.write_eof()
    except ConnectionError:
        pass  # the client left first
    return response


class _Acceptor:
    def __init__(self) -> None:
        from aiohttp import web

        self._loop = asyncio.new_event_loop()
        self._ready: queue.SimpleQueue[_Outbox] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def handler(request: Any) -> Any:
            return await _serve_stream(request, _Outbox(self._loop), self._ready.put)

        async def start() -> tuple[Any, asyncio.Server]:
            web_server = web.Server(handler)  # it takes the running loop
            return web_server, await self._loop.create_server(web_server, "127.0.0.1", 0)

        future = asyncio.run_coroutine_threadsafe(start(), self._loop)
        self._web, self._server = future.result(10)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"

    def accept(self) -> _Link:
        return _Link(self._ready.get(timeout=30))

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._web.shutdown(_SHUTDOWN)

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(_SHUTDOWN + 3)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()


def side_a(task: Task, shared: object) -> _Acceptor:
    return _Acceptor()


class _ClientLink:
    """The receiving end (blocking): ``http.client`` reading the chunked event stream."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self._conn.request("GET", "/", headers={"Accept": "text/event-stream"})
        self._resp = self._conn.getresponse()
        if self._resp.status != 200:
            raise ConnectionError(f"the SSE server answered HTTP {self._resp.status}")
        self._read = self._resp.read1
        self._split = EventSplitter().feed
        self._queue: deque[bytes] = deque()

    def send(self, message: bytes) -> None:  # pragma: no cover - SSE is one-way
        raise RuntimeError("an event stream's client does not send")

    def recv(self) -> bytes:
        q = self._queue
        while not q:
            chunk = self._read(65536)
            if not chunk:
                raise EOFError("the SSE server ended the stream")
            q.extend(self._split(chunk))
        return q.popleft()

    def close(self) -> None:
        self._resp.close()
        self._conn.close()


def side_b(task: Task, address: str, shared: object) -> _ClientLink:
    return _ClientLink(address)


# -- asyncio ----------------------------------------------------------------------------------
class _AioLink:
    """The sending end (asyncio): ``await response.write(event)`` per message."""

    def __init__(self, response: Any, done: asyncio.Event) -> None:
        self._response = response
        self._write = response.write
        self._done = done

    async def send(self, message: bytes) -> None:
        await self._write(_event(message))

    async def recv(self) -> bytes:  # pragma: no cover - SSE is one-way
        raise RuntimeError("the server side of an event stream does not receive")

    async def aclose(self) -> None:
        try:
            await self._response.write_eof()
        except ConnectionError:
            pass  # the client left first
        finally:
            self._done.set()


class _AioAcceptor:
    def __init__(self, web_server: Any, server: asyncio.Server) -> None:
        self._web = web_server
        self._server = server
        self._ready: asyncio.Queue[_AioLink] = asyncio.Queue()
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        response = web.StreamResponse(headers=_HEADERS)
        await response.prepare(request)
        done = asyncio.Event()
        self._ready.put_nowait(_AioLink(response, done))
        await done.wait()
        return response

    async def accept(self) -> _AioLink:
        return await asyncio.wait_for(self._ready.get(), 30)

    async def aclose(self) -> None:
        self._server.close()
        await self._web.shutdown(_SHUTDOWN)


async def aio_side_a(task: Task, shared: object) -> _AioAcceptor:
    from aiohttp import web

    holder: list[_AioAcceptor] = []

    async def handler(request: Any) -> Any:
        return await holder[0].handle(request)

    web_server = web.Server(handler)
    server = await asyncio.get_running_loop().create_server(web_server, "127.0.0.1", 0)
    acceptor = _AioAcceptor(web_server, server)
    holder.append(acceptor)
    return acceptor


class _AioClientLink:
    """The receiving end (asyncio): aiohttp's client reading the response body."""

    def __init__(self, session: Any, response: Any) -> None:
        if response.connection is not None:  # as ipcwire's: no mmap per read (_read_size)
            bound_reads(response.connection.transport)
        self._session = session
        self._response = response
        self._read = response.content.readany
        self._split = EventSplitter().feed
        self._queue: deque[bytes] = deque()

    async def send(self, message: bytes) -> None:  # pragma: no cover - SSE is one-way
        raise RuntimeError("an event stream's client does not send")

    async def recv(self) -> bytes:
        q = self._queue
        while not q:
            chunk = await self._read()
            if not chunk:
                raise EOFError("the SSE server ended the stream")
            q.extend(self._split(chunk))
        return q.popleft()

    async def aclose(self) -> None:
        self._response.close()
        await self._session.close()


async def aio_side_b(task: Task, address: str, shared: object) -> _AioClientLink:
    import aiohttp

    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
    try:
        response = await session.get(f"http://{address}/", headers={"Accept": "text/event-stream"})
        if response.status != 200:
            raise ConnectionError(f"the SSE server answered HTTP {response.status}")
    except BaseException:
        await session.close()
        raise
    return _AioClientLink(session, response)


def _contender(api: str) -> Contender:
    aio = api == "asyncio"
    return Contender(
        id="raw/sse+http" + ("/asyncio" if aio else ""),
        title="aiohttp event stream" + (", asyncio" if aio else ""),
        group="baseline",
        mechanism="sse+http",
        api="asyncio" if aio else "blocking",
        side_a=aio_side_a if aio else side_a,
        side_b=aio_side_b if aio else side_b,
        framing="SSE event: data: <base64> and a blank line, in HTTP chunks",
        overhead=None,
        kinds=("throughput",),
        listener_sends=True,
        requires=("aiohttp",),
        note=(
            "aiohttp's web.Server streaming text/event-stream directly; client: aiohttp"
            if aio
            else "aiohttp's web.Server in a thread, a bounded outbox; client: http.client"
        ),
    )


CONTENDERS: Final = (_contender("blocking"), _contender("asyncio"))
for _c in CONTENDERS:
    register_contender(_c)
