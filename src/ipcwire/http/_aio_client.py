"""The client end of an HTTP channel, asyncio: an httpx.AsyncClient, a sender task, a reader.

``AioHttpChannel`` is what :func:`ipcwire.http.aio.connect` returns. It lives apart from the
driver's entry points and listener because it is the whole of the asyncio client's machinery
(queueing and posting sends in a sender task, reading the message stream in a reader task,
closing, also after the loop has ended), and nothing on the server side uses it; it mirrors
``_blocking_client.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx

from ipcwire._core.ending import error_reason
from ipcwire._deadline import limit, not_seconds
from ipcwire.aio._loop_end import at_loop_end
from ipcwire.aio._timeouts import within
from ipcwire.aio._without_loop import drop_socket, handed_to_loop, not_this_loop
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import PeerInfo, closed_because, timed_out_request
from ipcwire.errors import IpcwireError, LocalProtocolError, Timeout
from ipcwire.http._after_loop import loop_ended, pool_sockets
from ipcwire.http._client import ClientCore, Req
from ipcwire.http._connect import FLUSH_TIMEOUT, STREAM_TIMEOUT, ClientEnd, transport_error
from ipcwire.http._frames import StreamReader
from ipcwire.http._server import SERVERS
from ipcwire.http._session import HIGH_WATER
from ipcwire.options import DEFAULT_REQUEST_TIMEOUT

__all__ = ["AioHttpChannel"]

_CUT_TIMEOUT = 2.0  # aclose(): opening a message stream to cut it (an older server)
log = logging.getLogger("ipcwire")


class AioHttpChannel(ClientEnd, AioChannel):
    """The client end of an HTTP channel (asyncio); see docs/mechanisms/rest.md.

    As in the blocking channel, ``send`` queues and a sender task posts in order, batching
    what waits; ``request`` and ``aclose`` first wait until the queue is empty.
    """

    def __init__(
        self,
        core: ClientCore,
        client: httpx.AsyncClient,
        peer: PeerInfo,
        blocking_client: Callable[[], httpx.Client] | None = None,
    ) -> None:
        super().__init__(core, peer)
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._blocking_client = blocking_client  # for the DELETE of a close() after the loop
        self._send_lock = asyncio.Lock()
        self._recv_lock = asyncio.Lock()
        self._out = asyncio.Condition()  # for _wait_out: room in the queue, or all posted
        self._out_waiters = 0
        self._kick: asyncio.Future[None] | None = None  # the idle sender task waits on it
        self._sender: asyncio.Task[None] | None = None
        self._closing_task: asyncio.Task[None] | None = None  # close()'s aclose(), if begun
        self._reader: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._resume: asyncio.Future[None] | None = None
        self._asking = False  # the sender's request in flight asks for the reply
        self._open_at_loop_end: asyncio.Future[None] | None = None  # (watch_loop_end)

    async def _do(self, req: Req, doing: str) -> httpx.Response:
        body = req.body
        try:
            return await self._client.request(
                req.method,
                self._core.url_for(self._client, req.path),
                content=_chunks(body) if isinstance(body, list) else body,
                headers=req.headers,
                params=req.params,
                timeout=req.timeout,
            )
        except httpx.HTTPError as exc:
            if self._core.closed:
                raise self._core.closed_error() from None
            raise transport_error(exc, self.url, doing) from exc
        except RuntimeError:  # httpx: "the client has been closed" (close() in another thread)
            if self._core.closed:
                raise self._core.closed_error() from None
            raise

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._forked:
            raise self._forked_error()
        core = self._core
        payload = core.encode(obj)
        if not core.session:
            self._check_send()
            async with self._send_lock:
                core.check_send()
                resp = await self._do(core.send_req(payload, timeout), "sending to")
                core.sent_ok(resp, 1, len(payload))
            return
        await self._queue([payload], timeout)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        if self._forked:
            raise self._forked_error()
        core = self._core
        if not core.session:
            await super().send_many(objs, timeout=timeout)
            return
        payloads = [core.encode(obj) for obj in objs]
        if payloads:
            await self._queue(payloads, timeout)

    async def _queue(self, payloads: list[bytes], timeout: float | None) -> None:
        core = self._core
        self._check_send()
        if core.outbox_bytes > HIGH_WATER:
            await self._wait_out(lambda: core.outbox_bytes <= HIGH_WATER, timeout, "sent")
        core.queue(payloads)
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())
        self._wake_sender()

    def _check_send(self) -> None:
        """Raise what a send would raise before it starts: ChannelClosed, the channel's
        failure, or LocalProtocolError from another event loop than the channel's (its HTTP
        client, connections and sender task are that loop's: a message queued from here would
        never be posted)."""
        self._core.check_send()
        self._check_loop()

    def _check_loop(self) -> None:
        if (wrong := not_this_loop(self._loop, self.url)) is not None:
            raise wrong

    def _wake_sender(self) -> None:
        kick = self._kick
        if kick is not None and not kick.done():
            kick.set_result(None)

    async def _wait_out(
        self, done: Any, timeout: float | None, what: str, *, closing: bool = False
    ) -> None:
        core = self._core
        check = core.check_broken if closing else core.check_send  # (close() flushing)
        self._out_waiters += 1
        try:
            async with within(timeout), self._out:
                while not done():
                    check()
                    await self._out.wait()
        except TimeoutError:
            raise Timeout(core.unsent(what), endpoint=self.url) from None
        finally:
            self._out_waiters -= 1
        check()

    async def _send_loop(self) -> None:
        """Post what is queued, in order. While no message stream is open and a receiver
        waits, a post asks for the reply in its response (one exchange per round trip, as
        bare httpx code makes); when it brings none, the stream is opened."""
        core = self._core
        loop = asyncio.get_running_loop()
        while True:
            if not core.outbox and not core.closed and core.broken is None:
                kick = self._kick = loop.create_future()
                try:
                    await kick
                finally:
                    self._kick = None
                continue
            if not core.outbox or core.broken is not None:
                return
            ask = self._waiter is not None and not core.streaming and not core.inbox
            req, count, nbytes = core.next_post(ask)
            self._asking = ask
            resp: httpx.Response | None = None
            err: IpcwireError | None = None
            full = False
            try:
                resp = await self._do(req, "sending to")
                if ask:
                    full = core.replied(resp)
            except IpcwireError as exc:
                err = exc
            finally:
                self._asking = False
            if not full:  # answered (or failed): the messages leave the queue
                core.posted(resp, count, nbytes, err)
            if (
                self._waiter is not None
                and not core.streaming
                and not core.inbox
                and (full or not core.outbox or core.broken is not None)
            ):
                self._start_stream()  # no reply came with the post: it will come this way
            self._wake()
            if self._out_waiters:
                async with self._out:
                    self._out.notify_all()

    async def _flush(self, timeout: float | None, *, closing: bool = False) -> None:
        if self._core.outbox_bytes:
            await self._wait_out(
                lambda: self._core.outbox_bytes == 0, timeout, "requested", closing=closing
            )

    async def recv(self, *, timeout: float | None = None) -> Any:
        if self._forked:
            raise self._forked_error()
        core = self._core
        if not core.inbox or core.closed:
            await self._fill(timeout)
        msg = core.take()
        self._room()
        return msg

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        if self._forked:
            raise self._forked_error()
        core = self._core
        if not core.inbox or core.closed:
            await self._fill(timeout)
        out = [core.take()]
        while core.inbox and (max_messages is None or len(out) < max_messages):
            raw = core.inbox[0]
            try:
                out.append(core.take())
            except IpcwireError:  # does not decode: raised by the next receive, none lost
                core.give_back([raw])
                break
        self._room()
        return out

    def _room(self) -> None:
        r = self._resume
        if r is not None and self._core.inbox_bytes <= HIGH_WATER and not r.done():
            r.set_result(None)

    async def _fill(self, timeout: float | None) -> None:
        """Wait until a message is here: the answer to the sender's post when no stream is
        open and a post is due (see ``_send_loop``), else from the message stream (opened
        at the first such call)."""
        core = self._core
        if not core.session and not core.inbox and not core.closed:
            raise core.nothing_to_receive()
        loop = asyncio.get_running_loop()
        try:
            deadline = None if timeout is None else loop.time() + timeout
        except TypeError:  # timeout="1": checked where it is first added (no cost else)
            raise not_seconds(timeout, self.url) from None
        while True:
            if core.closed:
                raise core.closed_error()
            if core.inbox:
                return
            if core.ended is not None:
                raise core.ended
            self._check_loop()  # (the stream and the wait below are the channel's loop's)
            if not core.streaming and core.session and not self._reply_due():
                self._start_stream()
            if self._waiter is not None:
                raise LocalProtocolError(
                    f"another task is already receiving on {self.url}; receive from one task",
                    endpoint=self.url,
                )
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise Timeout(
                    f"no message from {self.url} "
                    + ("yet" if timeout == 0 else f"within {timeout} s"),
                    endpoint=self.url,
                )
            fut = self._waiter = loop.create_future()
            try:
                if left is None:
                    await fut
                else:
                    async with within(left):
                        await fut
            except TimeoutError:
                pass  # the deadline check above raises
            finally:
                self._waiter = None

    def _reply_due(self) -> bool:
        """Whether the sender's post (in flight, or about to be made for what is queued)
        asks for the reply: then no stream is needed."""
        core = self._core
        if self._asking:
            return True
        sender = self._sender
        if not core.outbox or core.broken is not None:
            return False
        return sender is not None and not sender.done()

    def _start_stream(self) -> None:
        self._core.streaming = True
        self._reader = asyncio.get_running_loop().create_task(self._read_stream())

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _read_stream(self) -> None:
        """The reader task: every message from the server's stream into the inbox."""
        core = self._core
        reader = StreamReader(core.max_frame, self.url)
        err: IpcwireError | None = None
        req = core.stream_req()
        try:
            async with self._client.stream("GET", req.path, timeout=STREAM_TIMEOUT) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise core.error(resp, "receiving")
                async for chunk in resp.aiter_raw():
                    msgs = reader.feed(chunk)
                    if msgs:
                        core.arrived(msgs)
                        self._wake()
                        if core.inbox_bytes > HIGH_WATER and not core.closed:
                            self._resume = asyncio.get_running_loop().create_future()
                            await self._resume
                            self._resume = None
            if reader.failed is not None:
                err = core.stream_failed(reader.failed)
            elif reader.partial:
                err = core.cut_off()
        except IpcwireError as exc:
            err = exc
        except httpx.HTTPError as exc:
            err = transport_error(exc, self.url, "receiving from")
        core.stream_ended(err)
        self._wake()

    async def _exchange(self, obj: Any, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Any:
        if self._forked:
            raise self._forked_error()
        core = self._core
        # NaN, "1": ConfigurationError before anything is sent (not httpx's TypeError)
        limit(timeout, self.url)
        self._check_send()
        if core.inbox or core.streaming:  # the reply is the stream's next message
            return await super()._exchange(obj, timeout=timeout)
        payload = core.encode(obj)
        await self._flush(timeout)
        async with self._send_lock, self._recv_lock:
            core.check_send()
            try:
                resp = await self._do(core.call_req(payload, timeout), "requesting from")
                return core.called(resp, len(payload))
            except Timeout as exc:
                closed_because(self, timed_out_request(timeout))
                # close(), not aclose(): the DELETE goes over the link that just failed to
                # carry the reply (a partition, a slow link); timeout= bounds the call
                self.close()
                raise core.late_reply(timeout) from exc

    def watch_loop_end(self) -> None:
        """Say so if the event loop ends (``asyncio.run()`` returning) with this channel
        open. The loop's end cancels every task, this channel's sender (and the post it has
        under way) with them, before any code of ipcwire's can run: what ``send()`` had
        queued was lost in silence (0 of 500 messages of 8000 bytes arrived), and the
        server's ``recv()`` waited for more. Now a WARNING names the channel, what was not
        delivered, and the fix, and the session is ended as ``close()`` after the loop ends
        it: the DELETE counts the messages not delivered, so the server's ``recv()`` raises
        ``ChannelBroken`` saying how many. (Posting them then, with a blocking client, could
        deliver twice what the cancelled post had carried: the protocol has no way to tell.)
        Not the DELETE when an ipcwire HTTP server runs in this loop: it is being cancelled
        too, and would never answer."""
        self._open_at_loop_end = at_loop_end(
            self._loop, f"ipcwire: warns if the loop ends with {self.url} open", self._lost
        )

    def _lost(self) -> None:
        """The loop is ending with this channel open (see watch_loop_end)."""
        core = self._core
        if core.closed or core.closing or self._forked:
            return
        if core.outbox:
            log.warning(
                "the event loop ended with %s still open: %d messages sent were not "
                "delivered; they are lost. Close it before the loop ends: await "
                "aclose(), or use 'async with'",
                self.url,
                len(core.outbox),
            )
        if not any(srv.loop is self._loop for srv in list(SERVERS)):
            self._close_without_loop()

    def close(self) -> None:
        """Close without waiting: the server learns of it when the task below runs (after
        the channel's loop has ended: at once, the connections dropped and the DELETE sent
        without the loop)."""
        if self._core.closed or (not self._forked and handed_to_loop(self._loop, self.close)):
            return  # (another thread: the loop closes it; its futures and tasks are the loop's)
        self._no_loop_end_watch()
        if self._forked:
            # A forked child closing its copy: the session, its connections and the loop's
            # registrations (a copy of the parent's epoll) are the parent's. No DELETE, no
            # shutdown(2), no loop work; the sockets go with the child.
            self._core.closing = self._core.closed = True
            return
        if loop_ended(self._loop):
            self._close_without_loop()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the loop stands still: it closes the channel when it runs
            loop = self._loop
        self._core.closing = True  # closed from now on (no more sends); the task finishes it
        task = loop.create_task(self.aclose())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._closing_task = task

    def _no_loop_end_watch(self) -> None:
        f = self._open_at_loop_end
        if f is not None and not f.done() and not loop_ended(self._loop):
            f.set_result(None)

    def _close_without_loop(self) -> None:
        """``close()`` after the loop has ended (``ipcwire.http._after_loop``): its tasks and
        waiters ended with it; what was queued and not posted is counted in the DELETE."""
        core = self._core
        core.closing = True
        core.closed = True
        for sock in pool_sockets(self._client):
            drop_socket(sock)
        req = core.close_req()
        if req is None or self._blocking_client is None:
            return
        try:
            with self._blocking_client() as client:
                client.request(req.method, req.path, headers=req.headers, timeout=req.timeout)
        except httpx.HTTPError:
            pass

    async def aclose(self) -> None:
        core = self._core
        if core.closed:
            return
        self._no_loop_end_watch()
        task = self._closing_task
        if task is not None and task is not asyncio.current_task():
            # close() began it (request()'s timeout, say): wait for that one, not a second
            if task.get_loop() is asyncio.get_running_loop():
                await asyncio.shield(task)
            return
        if self._forked:
            self.close()  # (the copy: see close())
            return
        core.closing = True  # a send waiting for room ends now (ChannelClosed)
        async with self._out:
            self._out.notify_all()
        try:
            # what was sent before close() arrives first; what cannot (the server's
            # application takes nothing for FLUSH_TIMEOUT) is counted in the DELETE
            await self._flush(FLUSH_TIMEOUT, closing=True)
        except IpcwireError:
            pass
        core.closed = True
        self._wake_sender()
        async with self._out:
            self._out.notify_all()
        self._wake()
        if self._sender is not None:
            self._sender.cancel()
        req = core.close_req()
        if req is not None and core.fails_by_cutting():
            await self._cut_stream()
        elif req is not None:
            try:
                await self._client.request(
                    req.method, req.path, headers=req.headers, timeout=req.timeout
                )
            except httpx.HTTPError:
                pass
        if self._reader is not None:
            self._reader.cancel()
        await self._client.aclose()

    async def _aclose_after(self, exc: BaseException | None) -> None:
        core = self._core
        if not (core.closed or core.closing):
            core.failure = error_reason(exc)
        await self.aclose()

    async def _cut_stream(self) -> None:
        """Tell a server that does not read ``Ipcwire-Failed`` of a failure: a message stream
        cut short (the reader's, cancelled below; else one opened and dropped here)."""
        if self._core.streaming:
            return
        req = self._core.stream_req()
        try:
            async with self._client.stream("GET", req.path, timeout=_CUT_TIMEOUT):
                pass  # leaving without reading the body drops the connection
        except httpx.HTTPError:
            pass


async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    """A body given as chunks, for httpx.AsyncClient (Content-Length is in the headers)."""
    for chunk in chunks:
        yield chunk
