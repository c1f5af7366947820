"""The queue between a WebSocket connection's reader and ``recv()`` (both drivers, both
sides), bounded by bytes as well as by frames.

The websockets library queues each frame it reads for ``recv()`` and pauses reading only
above ``max_queue`` frames (16), whatever their size: a peer sending large messages to a
channel nobody read made it hold 17 of them (about 1.1 GB with ``max_frame`` at 64 MiB),
where ipcwire promises bounded memory whatever a peer sends. The queues here also pause
reading once the frames queued hold over ``RECV_QUEUE_HIGH`` bytes (``ipcwire.ws._common``,
one definition for both drivers) and resume once they hold at most ``RECV_QUEUE_LOW``, and at
most the library's low-water mark of frames. A frame is always queued, whatever its size up
to ``max_frame``: a large message gets through, and a message in many fragments assembles,
since ``get`` takes its fragments from the queue as it joins them, which resumes reading. So
a connection holds about ``RECV_QUEUE_HIGH``, plus one message, plus what the parser has read
of the next one. Keeping the count costs an addition and a comparison per frame.

* :class:`FastAssembler` (``websockets.sync``): the library's ``Assembler`` with the byte
  bound, and its common case (a whole message, no timeout) in one short method (the library's
  takes three locks and builds a deadline per call); end of stream and concurrency rules are
  the library's, unchanged, and every other case goes to the library's own ``get``.
* :class:`FastAioAssembler` (``websockets.asyncio``) with its :class:`ByteQueue`, made in the
  connection's ``connection_made``; :meth:`FastAioAssembler.take_message` lets the channel
  take a message already queued without the library's coroutines.

Both are used only when the installed websockets has the attributes they rely on (checked
at import, and on the live object); otherwise the library's own classes run as they are,
bounded by frames only.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from websockets import exceptions as ws_exceptions
from websockets.asyncio.messages import Assembler as AioAssembler
from websockets.asyncio.messages import SimpleQueue as AioSimpleQueue
from websockets.exceptions import ConcurrencyError
from websockets.frames import Frame
from websockets.sync import messages as sync_messages
from websockets.sync.messages import Assembler

from ipcwire.ws._common import RECV_QUEUE_HIGH, RECV_QUEUE_LOW

__all__ = [
    "COMPATIBLE",
    "ByteQueue",
    "FastAioAssembler",
    "FastAssembler",
    "fast_aio_assembler",
    "fast_assembler",
]

_TooManyFragments: Any = getattr(ws_exceptions, "TooManyFragments", None)
_MAX_FRAGMENTS: Final[int] = getattr(sync_messages, "MAX_FRAGMENTS", 0)


def _compatible() -> bool:
    """Whether this websockets keeps the state the queues read and override."""
    sync = Assembler()
    return (
        isinstance(getattr(sync, "frames", None), queue.SimpleQueue)
        and all(hasattr(sync, a) for a in ("mutex", "get_in_progress", "paused", "closed", "low"))
        and all(
            hasattr(Assembler, m)
            for m in ("get_next_frame", "reset_queue", "maybe_pause", "maybe_resume")
        )
        and all(hasattr(AioSimpleQueue, m) for m in ("put", "get", "put_back", "abort"))
        and all(hasattr(AioAssembler, m) for m in ("put", "maybe_pause", "maybe_resume"))
        and _TooManyFragments is not None
        and _MAX_FRAGMENTS > 0
    )


COMPATIBLE: Final = _compatible()


class FastAssembler(Assembler):
    """The threaded connection's message queue, with a short path for a whole message and
    a byte bound on what it holds (``queued_bytes``, under ``mutex``: the payload bytes of
    the frames queued). Every way a frame leaves the queue (:meth:`_next`, the library's
    ``get``/``get_iter`` through :meth:`get_next_frame`) or comes back (:meth:`reset_queue`)
    keeps the count."""

    def __init__(
        self,
        high: int | None = None,
        low: int | None = None,
        pause: Callable[[], Any] = lambda: None,
        resume: Callable[[], Any] = lambda: None,
    ) -> None:
        super().__init__(high, low, pause=pause, resume=resume)
        self.queued_bytes = 0

    def put(self, frame: Frame) -> None:
        with self.mutex:
            if self.closed:
                raise EOFError("stream of frames ended")
            frames = self.frames
            frames.put(frame)
            size = self.queued_bytes = self.queued_bytes + len(frame.data)
            if not self.paused and (
                size > RECV_QUEUE_HIGH or (self.high is not None and frames.qsize() > self.high)
            ):
                self.paused = True
                self.pause()

    def maybe_pause(self) -> None:
        """Pause reading above either high-water mark (the caller holds ``mutex``)."""
        if not self.paused and (
            self.queued_bytes > RECV_QUEUE_HIGH
            or (self.high is not None and self.frames.qsize() > self.high)
        ):
            self.paused = True
            self.pause()

    def maybe_resume(self) -> None:
        """Resume reading at or below both low-water marks (the caller holds ``mutex``)."""
        if (
            self.paused
            and self.queued_bytes <= RECV_QUEUE_LOW
            and (self.low is None or self.frames.qsize() <= self.low)
        ):
            self.paused = False
            self.resume()

    def get_next_frame(self, timeout: float | None = None) -> Frame:
        # the library's get() and get_iter() take each frame here (then call maybe_resume)
        frame = super().get_next_frame(timeout)
        with self.mutex:
            self.queued_bytes -= len(frame.data)
        return frame

    def reset_queue(self, frames: Iterable[Frame]) -> None:
        # the frames of a message a get() with a timeout took in part go back in the queue
        frames = list(frames)
        super().reset_queue(frames)
        with self.mutex:
            self.queued_bytes += sum(len(frame.data) for frame in frames)
            self.maybe_pause()

    def get(self, timeout: float | None = None, decode: bool | None = None) -> Any:
        if timeout is not None or decode is not False or self.closed:
            return super().get(timeout, decode)  # the library's, for everything else
        with self.mutex:
            if self.get_in_progress:
                raise ConcurrencyError("get() or get_iter() is already running")
            self.get_in_progress = True
        try:
            frame = self._next()
            if frame.fin:
                data = frame.data
                return data if type(data) is bytes else bytes(data)
            parts = [frame.data]
            while not frame.fin:
                frame = self._next()
                if len(parts) >= _MAX_FRAGMENTS:
                    raise _TooManyFragments(_MAX_FRAGMENTS)
                parts.append(frame.data)
            return b"".join(parts)
        finally:
            self.get_in_progress = False

    def _next(self) -> Frame:
        """The next frame; resume reading at or below both low-water marks."""
        frames = self.frames
        try:
            # after close(), only what is queued (close() queues None to wake a waiting get)
            frame = frames.get(block=not self.closed)
        except queue.Empty:
            raise EOFError("stream of frames ended") from None
        if frame is None:
            raise EOFError("stream of frames ended")
        with self.mutex:  # under the lock, so that it cannot miss a pause() that races it
            size = self.queued_bytes = self.queued_bytes - len(frame.data)
            if (
                self.paused
                and size <= RECV_QUEUE_LOW
                and (self.low is None or frames.qsize() <= self.low)
            ):
                self.paused = False
                self.resume()
        return frame


def fast_assembler(old: Assembler) -> Assembler:
    """A :class:`FastAssembler` with the same limits and callbacks as ``old`` (a fresh one)."""
    if not COMPATIBLE or type(old) is not Assembler:
        return old
    return FastAssembler(old.high, old.low, pause=old.pause, resume=old.resume)


class ByteQueue(AioSimpleQueue[Frame]):
    """The asyncio assembler's queue of frames, counting the payload bytes it holds
    (``nbytes``) on every way in and out: :meth:`put`, :meth:`get`, :meth:`put_back` (a
    ``get`` cancelled part-way through a message) and :meth:`take`."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0

    def put(self, item: Frame) -> None:
        self.queue.append(item)
        self.nbytes += len(item.data)
        waiter = self.get_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # wake the get() waiting for it

    async def get(self, block: bool = True) -> Frame:
        queued = self.queue
        # a frame already here is taken without another coroutine; else the library waits
        item = queued.popleft() if queued else await super().get(block)
        self.nbytes -= len(item.data)
        return item

    def put_back(self, items: Sequence[Frame]) -> None:
        super().put_back(items)
        self.nbytes += sum(len(item.data) for item in items)

    def take(self) -> Frame:
        """The first frame, now (the caller checked there is one)."""
        item = self.queue.popleft()
        self.nbytes -= len(item.data)
        return item


class FastAioAssembler(AioAssembler):
    """``websockets.asyncio``'s message queue with the byte bound (:class:`ByteQueue`), and
    :meth:`take_message` for a message already here."""

    frames: ByteQueue

    def __init__(
        self,
        high: int | None = None,
        low: int | None = None,
        pause: Callable[[], Any] = lambda: None,
        resume: Callable[[], Any] = lambda: None,
    ) -> None:
        super().__init__(high, low, pause=pause, resume=resume)
        self.frames = ByteQueue()

    def put(self, frame: Frame) -> None:
        if self.closed:
            raise EOFError("stream of frames ended")
        frames = self.frames
        frames.put(frame)
        if not self.paused and (
            frames.nbytes > RECV_QUEUE_HIGH
            or (self.high is not None and len(frames.queue) > self.high)
        ):
            self.paused = True
            self.pause()

    def maybe_pause(self) -> None:
        """Pause reading above either high-water mark."""
        frames = self.frames
        if not self.paused and (
            frames.nbytes > RECV_QUEUE_HIGH
            or (self.high is not None and len(frames.queue) > self.high)
        ):
            self.paused = True
            self.pause()

    def maybe_resume(self) -> None:
        """Resume reading at or below both low-water marks (the library's ``get`` calls it
        after each frame it takes)."""
        frames = self.frames
        if (
            self.paused
            and frames.nbytes <= RECV_QUEUE_LOW
            and (self.low is None or len(frames.queue) <= self.low)
        ):
            self.paused = False
            self.resume()

    def take_message(self) -> Frame | None:
        """A whole message already queued, taken without the library's coroutines (what its
        ``get`` does then); None when there is none, or ``get`` must decide (one is running,
        a fragmented message comes next, the stream ended)."""
        queued = self.frames.queue
        if not queued or not queued[0].fin or self.get_in_progress or self.closed:
            return None
        frame = self.frames.take()
        if self.paused:
            self.maybe_resume()
        return frame


def fast_aio_assembler(old: AioAssembler) -> AioAssembler:
    """A :class:`FastAioAssembler` with the same limits and callbacks as ``old`` (a fresh
    one, made in ``connection_made``, before the first frame)."""
    frames = getattr(old, "frames", None)
    if (
        not COMPATIBLE
        or type(old) is not AioAssembler
        or not isinstance(getattr(frames, "queue", None), deque)
        or not hasattr(frames, "get_waiter")
    ):
        return old
    return FastAioAssembler(old.high, old.low, pause=old.pause, resume=old.resume)
