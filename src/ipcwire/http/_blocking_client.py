"""The client end of an HTTP channel, blocking: an httpx.Client, a sender thread, waiting.

``HttpChannel`` is what :func:`ipcwire.http.blocking.connect` returns. It lives apart from the
driver's entry points and listener because it is the whole of the blocking client's
machinery (queueing and posting sends on a sender thread, reading the message stream in the
caller's thread or a reader thread, closing), and nothing on the server side uses it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from ipcwire._atexit import closes_at_exit
from ipcwire._core.ending import error_reason
from ipcwire._core.wire import decode_taken
from ipcwire._deadline import limit, not_seconds, seconds_left
from ipcwire._turns import take_turn
from ipcwire.channel import Channel, PeerInfo, closed_because, timed_out_request
from ipcwire.errors import IpcwireError, Timeout
from ipcwire.http._client import ClientCore, Req
from ipcwire.http._connect import FLUSH_TIMEOUT, STREAM_TIMEOUT, ClientEnd, transport_error
from ipcwire.http._frames import StreamReader
from ipcwire.http._session import HIGH_WATER
from ipcwire.options import DEFAULT_REQUEST_TIMEOUT

__all__ = ["HttpChannel"]

_CUT_TIMEOUT = 2.0  # close(): opening a message stream to cut it (an older server)


class HttpChannel(ClientEnd, Channel):
    """The client end of an HTTP channel (blocking); see docs/mechanisms/rest.md.

    ``send`` queues the message and returns; a sender thread (started at the first send)
    posts what is queued, in order, as one batch when several are waiting, so a sender is
    never slower than one POST per message. A ``recv`` without a timeout that finds the one
    message ``send`` queued still there posts it itself and, while no message stream is open,
    takes the reply from that POST's response (``_post_here``): a round trip is one exchange.
    At most ``HIGH_WATER`` bytes wait (then ``send`` waits, up to its timeout). A failed post
    breaks the channel: the next ``send`` raises why. ``request`` and ``close`` first wait
    until everything queued was posted, so order is kept.
    """

    def __init__(self, core: ClientCore, client: httpx.Client, peer: PeerInfo) -> None:
        super().__init__(core, peer)
        self._client = client
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._out = threading.Condition(threading.Lock())
        self._out_waiters = 0  # threads in _wait_out (woken when a post is answered)
        self._sender: threading.Thread | None = None
        # The sender thread sleeps on this lock (held: nothing to do); a kick releases it.
        self._kick = threading.Lock()
        self._kick.acquire()
        self._in = threading.Condition(threading.Lock())
        # The message stream: read by recv() itself while no timeout was ever asked for (no
        # thread hop), then by a reader thread (``_threaded``); see ``_pull``.
        self._resp: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._reader = StreamReader(core.max_frame, core.url)
        self._threaded = False
        self._posting = False  # a POST of queued messages is in flight (one at a time: order)
        self._unanswered = False  # send() was called since the last recv()
        self._closer: threading.Thread | None = None  # the closing after request()'s timeout
        self._close_once = threading.Lock()
        self._close_began = False
        # A program that ends without close() (a script whose last line is a send): what the
        # sender thread had not posted went with the process, and the server never learned
        # that the session ended (195 of 200 messages arrived, then its recv() waited). It
        # is closed at exit instead, as close() closes it (ipcwire._atexit).
        self._at_exit = closes_at_exit(self)

    def _do(self, req: Req, doing: str) -> httpx.Response:
        try:
            return self._client.request(
                req.method,
                self._core.url_for(self._client, req.path),
                content=req.body,
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

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._forked:
            raise self._forked_error()
        core = self._core
        payload = core.encode(obj)
        if not core.session:
            with self._send_lock:
                core.check_send()
                resp = self._do(core.send_req(payload, timeout), "sending to")
                core.sent_ok(resp, 1, len(payload))
            return
        self._queue([payload], timeout)

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        if self._forked:
            raise self._forked_error()
        core = self._core
        if not core.session:
            super().send_many(objs, timeout=timeout)
            return
        payloads = [core.encode(obj) for obj in objs]
        if payloads:
            self._queue(payloads, timeout)

    def _queue(self, payloads: list[bytes], timeout: float | None) -> None:
        core = self._core
        with self._out:
            core.check_send()
            if core.outbox_bytes > HIGH_WATER:
                self._wait_out(lambda: core.outbox_bytes <= HIGH_WATER, timeout, "sent")
            core.queue(payloads)
            self._unanswered = True
            if self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_loop, name=f"ipcwire sender {self.url}", daemon=True
                )
                self._sender.start()
            if not self._posting:  # else whoever is posting kicks when it is answered
                self._wake_sender()

    def _wake_sender(self) -> None:
        """Let the sender thread look at the queue (cheap: one lock release)."""
        if self._kick.locked():
            try:
                self._kick.release()
            except RuntimeError:  # released by another thread just now
                pass

    def _wait_out(
        self, done: Any, timeout: float | None, what: str, *, closing: bool = False
    ) -> None:
        """Wait (holding ``_out``) until ``done()``; raise if the channel fails meanwhile
        (or is closed, unless this is close() itself: ``closing``)."""
        core = self._core
        deadline = None if timeout is None else time.monotonic() + timeout
        check = core.check_broken if closing else core.check_send
        self._out_waiters += 1
        try:
            while not done():
                check()
                self._out.wait(seconds_left(deadline, core.unsent(what), self.url))
        finally:
            self._out_waiters -= 1

    def _answered(self) -> None:
        """A post was answered (holding ``_out``): wake whoever waits for it."""
        if self._core.outbox or self._core.closed:
            self._wake_sender()
        if self._out_waiters:
            self._out.notify_all()

    def _send_loop(self) -> None:
        core = self._core
        kick = self._kick
        while True:
            kick.acquire()
            with self._out:
                if core.broken is not None or (core.closed and not core.outbox):
                    return
                if not core.outbox or self._posting:
                    continue  # posted meanwhile, or being posted: its answer kicks again
            self._post()
            if core.outbox:
                self._wake_sender()  # more came meanwhile: go round again

    def _post(self) -> None:
        """POST what is queued (one batch), unless another thread is posting now."""
        core = self._core
        cond = self._out
        with cond:
            if not core.outbox or self._posting or core.broken is not None:
                return
            req, count, nbytes = core.next_post()
            self._posting = True
        resp: httpx.Response | None = None
        err: IpcwireError | None = None
        try:
            resp = self._do(req, "sending to")
        except IpcwireError as exc:
            err = exc
        finally:
            with cond:
                core.posted(resp, count, nbytes, err)
                self._posting = False
                if self._out_waiters:
                    cond.notify_all()

    def _flush(self, timeout: float | None, *, closing: bool = False) -> None:
        """Wait until everything queued was posted (for request() and close())."""
        core = self._core
        if core.outbox_bytes:
            with self._out:
                self._wait_out(
                    lambda: core.outbox_bytes == 0, timeout, "requested", closing=closing
                )

    def recv(self, *, timeout: float | None = None) -> Any:
        left = self._take_turn(timeout)
        try:
            self._fill(left, timeout)
            with self._in:
                raw_left = self._take_raw(1)
        finally:
            self._recv_lock.release()
        return self._decode(raw_left)[0]

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        left = self._take_turn(timeout)
        try:
            self._fill(left, timeout)
            with self._in:
                raw = self._take_raw(max_messages)
        finally:
            self._recv_lock.release()
        return self._decode(raw)

    def _take_turn(self, timeout: float | None) -> float | None:
        """The receive lock, within ``timeout`` (receives take turns: :func:`take_turn`)."""
        if self._forked:  # (first: a parent's thread may have held the lock at the fork)
            raise self._forked_error()
        return take_turn(self._recv_lock, timeout, self.url)

    def _take_raw(self, limit: int | None) -> list[bytes]:
        core = self._core
        out = [core.inbox.popleft()]
        while core.inbox and (limit is None or len(out) < limit):
            out.append(core.inbox.popleft())
        n = sum(len(m) for m in out) if len(out) > 1 else len(out[0])
        core.inbox_bytes -= n
        core.received += len(out)
        if self._threaded and core.inbox_bytes <= HIGH_WATER:
            self._in.notify_all()  # the reader thread may be waiting for room
        return out

    def _decode(self, raw: list[bytes]) -> list[Any]:
        core = self._core
        if core._raw:
            return raw

        def put_back(back: list[bytes]) -> None:
            with self._in:
                core.give_back(back)

        return decode_taken(core.decode, raw, put_back)

    def _fill(self, timeout: float | None, said: float | None) -> None:
        """Wait until a message is here (opening the message stream at the first call);
        ``timeout``: what is left of the caller's, ``said`` (for the message).
        Holding ``_recv_lock``: without a timeout, and while no reader thread runs, read the
        stream in this thread, as bare httpx code does; the first timeout starts the thread
        (an httpx read cannot be given up half way and resumed)."""
        core = self._core
        if core.closed:
            raise core.closed_error()
        if core.inbox:
            return
        if not core.session:
            raise core.nothing_to_receive()
        if timeout is None and not self._threaded:
            asked, self._unanswered = self._unanswered, False
            self._post_here()
            if not core.inbox and not core.streaming and (asked or self._posting):
                self._poll_here()
            while not core.inbox and core.ended is None and self._pull():
                pass
            if core.closed:
                raise core.closed_error()
        elif not self._threaded:
            self._threaded = True
            threading.Thread(
                target=self._read_stream, name=f"ipcwire reader {self.url}", daemon=True
            ).start()
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
        except TypeError:  # timeout="1": checked where it is first added (no cost else)
            raise not_seconds(said, self.url) from None
        with self._in:
            while not core.inbox:
                if core.closed:
                    raise core.closed_error()
                if core.ended is not None:
                    raise core.ended
                waited = "yet" if said == 0 else f"within {said} s"  # (as unix:// says)
                self._in.wait(
                    seconds_left(deadline, f"no message from {self.url} {waited}", self.url)
                )

    def _post_here(self) -> None:
        """recv() without a timeout, when the one message send() queued is still waiting for
        the sender thread: post it from this thread, so that send() then recv() makes no
        thread hop; and, while no message stream is open, ask for the reply in the same
        exchange (one POST per round trip, as bare httpx code makes). The server is asked
        not to wait for room (``Ipcwire-Timeout: 0``): if its application's queue is full it
        answers 504 with nothing delivered, the message stays queued for the sender thread,
        and this thread goes on to read the stream (so two peers that both send a lot cannot
        block each other here)."""
        core = self._core
        cond = self._out
        with cond:
            if len(core.outbox) != 1 or self._posting or core.broken is not None or core.closed:
                return
            payload = core.outbox[0]
            self._posting = True
        ask = not core.streaming
        req = core.reply_req(payload) if ask else core.nowait_req(payload)
        resp: httpx.Response | None = None
        err: IpcwireError | None = None
        full = False
        try:
            resp = self._do(req, "sending to")
            if ask:
                with self._in:
                    full = core.replied(resp)
            else:
                full = core.no_room(resp)
        except IpcwireError as exc:
            err = exc
        finally:
            with cond:
                self._posting = False
                if not full:  # sent, or failed: as if the sender thread had posted it
                    core.posted(resp, 1, len(payload), err)
                self._answered()

    def _poll_here(self) -> None:
        """recv() without a timeout after a send() whose message the sender thread took (it
        may still be posting it) while no stream is open: one long poll for the reply (in
        parallel with that POST: a poll carries nothing, so the order holds) rather than
        opening the stream for good; the stream is opened if nothing came within its wait."""
        core = self._core
        try:
            resp = self._do(core.poll_req(), "receiving from")
        except IpcwireError:
            return  # the stream, opened next, reports the channel's state
        with self._in:
            core.polled(resp)

    def _read_stream(self) -> None:
        """The reader thread: every message from the server's stream into the inbox."""
        core = self._core
        cond = self._in
        while self._pull():
            with cond:
                while core.inbox_bytes > HIGH_WATER and not core.closed:
                    cond.wait()

    def _pull(self) -> bool:
        """Read the message stream (opening it the first time) until a chunk brings messages
        into the inbox; False when it is over (its end is then recorded). One reader at a
        time: the caller of recv() holding ``_recv_lock``, or the reader thread."""
        core = self._core
        err: IpcwireError | None = None
        try:
            if self._chunks is None:
                req = core.stream_req()
                core.streaming = True
                resp = self._client.send(
                    self._client.build_request("GET", req.path, timeout=STREAM_TIMEOUT),
                    stream=True,
                )
                self._resp = resp
                if resp.status_code != 200:
                    resp.read()
                    raise core.error(resp, "receiving")
                self._chunks = resp.iter_raw()
            feed = self._reader.feed
            for chunk in self._chunks:
                msgs = feed(chunk)
                if msgs:
                    with self._in:
                        core.arrived(msgs)
                        self._in.notify_all()
                    return True
            if self._reader.failed is not None:
                err = core.stream_failed(self._reader.failed)
            elif self._reader.partial:
                err = core.cut_off()
        except IpcwireError as exc:
            err = exc
        except httpx.HTTPError as exc:
            err = transport_error(exc, self.url, "receiving from")
        with self._in:
            core.stream_ended(err)
            self._in.notify_all()
        if self._resp is not None:
            self._resp.close()
        return False

    def _exchange(self, obj: Any, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Any:
        if self._forked:
            raise self._forked_error()
        core = self._core
        # NaN, "1": ConfigurationError before anything is sent (not httpx's TypeError)
        limit(timeout, self.url)
        if core.inbox or core.streaming:
            # Messages come through the stream now (or one is already here): the reply is
            # the next of them, by the channel's order.
            return super()._exchange(obj, timeout=timeout)
        payload = core.encode(obj)
        self._flush(timeout)
        with self._send_lock, self._recv_lock:
            core.check_send()
            try:
                resp = self._do(core.call_req(payload, timeout), "requesting from")
                return core.called(resp, len(payload))
            except Timeout as exc:
                closed_because(self, timed_out_request(timeout))
                self._close_for_timeout()
                raise core.late_reply(timeout) from exc

    def close(self) -> None:
        closer = self._closer
        if closer is not None:  # request()'s timeout closed it: its DELETE goes on
            if closer is not threading.current_thread():
                closer.join()  # (bounded: FLUSH_TIMEOUT, then the DELETE's own timeout)
            return
        self._close_now()

    def _close_for_timeout(self) -> None:
        """After request()'s timeout (or an interrupt): closed now (no more sends, a send
        waiting for room ends), the rest of close() (what is queued, the DELETE) in a thread,
        so that the Timeout comes when ``timeout=`` passes, not after a DELETE over the link
        that just failed to carry the reply (a partition, a slow link). A later close()
        waits for that thread; so does the interpreter's exit (not a daemon: the server
        learns the session ended, within the DELETE's timeout)."""
        core = self._core
        if core.closed or core.closing or self._forked or os.getpid() != self._owner:
            self.close()
            return
        with self._out:
            core.closing = True  # ChannelClosed from now on; a send waiting for room ends
            self._out.notify_all()
        closer = threading.Thread(target=self._close_now, name=f"ipcwire close {self.url}")
        try:
            closer.start()
        except RuntimeError:  # at the process's thread limit: here, then
            self._close_now()
            return
        self._closer = closer

    def _close_now(self) -> None:
        """close() itself: once, whichever thread comes first."""
        core = self._core
        with self._close_once:
            if core.closed or self._close_began:
                return
            self._close_began = True
        self._at_exit.cancel()
        if os.getpid() != self._owner:
            # A forked child closing its copy: the session is its parent's (a DELETE would
            # end it for the parent's peer). Nothing to send; the sockets go with the child.
            core.closed = True
            return
        with self._out:
            core.closing = True  # a send waiting for room ends now (ChannelClosed)
            self._out.notify_all()
        try:
            # what was sent before close() arrives first; what cannot (the server's
            # application takes nothing for FLUSH_TIMEOUT) is counted in the DELETE
            self._flush(FLUSH_TIMEOUT, closing=True)
        except IpcwireError:
            pass
        with self._out:
            core.closed = True
            self._out.notify_all()
            self._wake_sender()  # it ends
        with self._in:
            self._in.notify_all()
        if not self._threaded and self._recv_lock.locked():
            self._interrupt_read()
        req = core.close_req()
        if req is not None and core.fails_by_cutting():
            self._cut_stream()
        elif req is not None:
            try:
                self._client.request(req.method, req.path, headers=req.headers, timeout=req.timeout)
            except httpx.HTTPError:
                pass
        self._client.close()  # (also the connection of an open message stream)

    def _close_after(self, exc: BaseException | None) -> None:
        core = self._core
        if not (core.closed or core.closing):
            core.failure = error_reason(exc)
        self.close()

    def _cut_stream(self) -> None:
        """Tell a server that does not read ``Ipcwire-Failed`` of a failure: a message stream
        cut short (closing the client cuts an open one; else open one and drop it)."""
        if self._core.streaming:
            return
        req = self._core.stream_req()
        try:
            with self._client.stream("GET", req.path, timeout=_CUT_TIMEOUT):
                pass  # leaving without reading the body drops the connection
        except httpx.HTTPError:
            pass

    def _interrupt_read(self) -> None:
        """Wake a recv() blocked reading the stream in another thread: shut its socket down
        (closing a socket does not wake a thread blocked reading it)."""
        resp = self._resp
        stream = resp.extensions.get("network_stream") if resp is not None else None
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
