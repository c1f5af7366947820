"""``fifo:`` asyncio listener: the reading side of a FIFO (see the blocking listener), one
writer session at a time."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from ipcwire.aio._timeouts import within
from ipcwire.aio._without_loop import handed_to_loop
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.errors import ChannelClosed, Timeout
from ipcwire.fifo._options import private
from ipcwire.fifo._path import (
    CreatedFifos,
    FifoPaths,
    hold_session_once,
    open_read,
    wait_open_write,
)
from ipcwire.options import ChannelOptions
from ipcwire.pipe._aio_channel import AioPipeChannel
from ipcwire.pipe.aio import open_aio_channel

__all__ = ["AioFifoListener"]


class _AioSession(AioPipeChannel):
    """A listener's channel: closing it lets the listener accept the next session."""

    def __init__(self, *args: Any, on_close: Any = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._on_close = on_close

    def close(self) -> None:
        if self._hand_close_to_loop():  # (another thread: the loop closes it, and says so)
            return
        super().close()
        if self._on_close is not None:
            self._on_close()


class AioFifoListener(AioListener):
    """The reading side of a FIFO, for asyncio (see the blocking listener)."""

    def __init__(self, url: str, paths: FifoPaths, options: ChannelOptions, *, mode: int) -> None:
        self.url = url
        self.paths = paths
        self._options = options
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._close_event = asyncio.Event()
        self._current: AioChannel | None = None
        self._session_done = asyncio.Event()
        self._created = CreatedFifos(paths, url, mode)
        try:
            self._rfd: int | None = private(open_read(paths.path, url), paths.path, options)
            self._keeper = open_read(paths.path, url) if paths.reply is None else None
        except BaseException:
            self._created.remove()
            raise

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        """The channel of the next writer session.

        Raises:
            Timeout, ChannelClosed: as the blocking listener.
        """
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        wfd = None
        waiting_for_client = False
        try:
            async with within(timeout):  # one deadline for both waits, as the blocking one
                while self._current is not None and not self._current.closed:
                    self._session_done.clear()
                    await self._session_done.wait()  # a FIFO has one reader: wait for it
                    if self._closed:
                        raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
                if self._rfd is None:  # by path: checked again (it may have been replaced)
                    path = self.paths.path
                    self._rfd = private(open_read(path, self.url), path, self._options)
                rfd = self._rfd
                if self.paths.reply is not None:
                    waiting_for_client = True
                    wfd = await self._reply_reader()
        except TimeoutError:
            if waiting_for_client:
                raise Timeout(
                    f"no client connected to {self.url} within {timeout} s", endpoint=self.url
                ) from None
            raise Timeout(
                f"{self.url}: the channel accepted before is still open, and a FIFO has one "
                f"reader; close it to accept the next writers",
                endpoint=self.url,
            ) from None
        if self._closed:
            if wfd is not None:
                os.close(wfd)
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        self._rfd = None
        ch = await open_aio_channel(
            rfd,
            wfd,
            self._options,
            role="server",
            handshake=True,
            read_to_eagain=True,
            channel_factory=_AioSession,
            on_close=self._session_done.set,
        )
        self._current = ch
        return ch

    async def _reply_reader(self) -> int:
        assert self.paths.reply is not None
        pause = 0.001
        while not self._closed:
            fd = wait_open_write(self.paths.reply, self.url, float("inf"))
            if fd is not None:
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        else:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        # The session's share of the turn lock (see lock_reply_once); refused only while a
        # client is coming in. The caller's timeout bounds the wait.
        pause = 0.0005
        try:
            while not hold_session_once(fd):
                if self._closed:
                    raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.01)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def close(self) -> None:
        if self._closed or handed_to_loop(self._loop, self.close):  # (its events: the loop's)
            return
        self._closed = True
        self._close_event.set()
        self._session_done.set()
        for fd in (self._rfd, self._keeper):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._rfd = self._keeper = None
        self._created.remove()
