"""The clipboard, asyncio driver: the tools run as asyncio subprocesses; polling sleeps on
the loop (see the blocking driver for the behaviour)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import weakref
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import limit
from ipcwire.aio._timeouts import within, within_at
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.channel import ChannelStatistics, PeerInfo, closed_error
from ipcwire.clipboard._content import decode, encode
from ipcwire.clipboard._options import ClipboardOptions, checked_options
from ipcwire.clipboard._tools import TOOL_TIMEOUT, Tool, tool_failed, tool_limit, tool_timed_out
from ipcwire.errors import ChannelClosed, Timeout
from ipcwire.options import ChannelOptions

__all__ = ["AioClipboardChannel", "AioClipboardListener", "connect", "listen"]

_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _tool_lock() -> asyncio.Lock:
    """One tool run at a time per event loop (see ``blocking.TOOL_LOCK``)."""
    loop = asyncio.get_running_loop()
    lock = _LOCKS.get(loop)
    if lock is None:
        lock = _LOCKS[loop] = asyncio.Lock()
    return lock


def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill a tool that is still running, without waiting (a cancelled task cannot)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class AioBackend:
    """Runs the tool's commands as asyncio subprocesses."""

    def __init__(self, tool: Tool, url: str) -> None:
        self.tool = tool
        self.url = url
        self._running: asyncio.subprocess.Process | None = None  # a recv()'s paste

    def interrupt(self) -> None:
        """Kill the paste that a ``recv()`` is waiting for (``close()``)."""
        if self._running is not None:
            _kill(self._running)

    async def paste(
        self, deadline: float | None = None, closing: asyncio.Event | None = None
    ) -> bytes | None:
        """The clipboard's content, or None when empty, or when ``closing`` was set (the run
        is then killed by :meth:`interrupt`: ``close()`` from another task).

        Raises:
            ChannelBroken: the tool failed.
            Timeout: it had not answered by ``deadline`` (the loop's clock).
        """
        limit, by_caller = tool_limit(deadline, asyncio.get_running_loop().time())
        proc = await asyncio.create_subprocess_exec(
            *self.tool.paste,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(self.tool.env),
        )
        if closing is not None:
            self._running = proc  # for interrupt(), which sets `closing` first
            if closing.is_set():
                _kill(proc)
        try:
            async with within(limit):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            if by_caller:
                raise tool_timed_out(self.tool, "read", self.url) from None
            raise tool_failed(self.tool, "read", "it did not answer", self.url) from None
        except BaseException:  # cancelled: the tool is not left running (the loop reaps it)
            _kill(proc)
            raise
        finally:
            self._running = None
        if closing is not None and closing.is_set() and proc.returncode != 0:
            return None  # killed by interrupt()
        if proc.returncode == 0:
            return out
        text = err.decode(errors="replace")
        if "not available" in text or "Nothing is copied" in text or "No selection" in text:
            return None
        raise tool_failed(self.tool, "read", text, self.url)

    async def copy(self, data: bytes, deadline: float) -> None:
        """Put ``data`` on the clipboard and wait until a paste returns it.

        Raises:
            Timeout, ChannelBroken.
        """
        loop = asyncio.get_running_loop()
        # The input is a file written whole first (see the blocking driver): through a pipe, a
        # sender killed mid-write left a part of the message on the clipboard.
        with tempfile.TemporaryFile() as src:
            src.write(data)
            src.seek(0)
            await self._run_copy(src, deadline)
            while await self.paste(deadline) != data:
                if loop.time() >= deadline:
                    raise Timeout(
                        f"{self.url}: the clipboard did not show the copied content in time",
                        endpoint=self.url,
                    )
                await asyncio.sleep(0.005)
            src.truncate(0)  # the tool's server keeps it open while it serves, and has it all

    async def _run_copy(self, src: BinaryIO, deadline: float) -> None:
        """Run the copy tool on ``src``.

        Raises:
            Timeout, ChannelBroken.
        """
        limit, by_caller = tool_limit(deadline, asyncio.get_running_loop().time())
        with tempfile.TemporaryFile() as err:
            proc = await asyncio.create_subprocess_exec(
                *self.tool.copy,
                stdin=src,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                env=dict(self.tool.env),
            )
            try:
                async with within(limit):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                if by_caller:
                    raise tool_timed_out(self.tool, "write", self.url) from None
                raise tool_failed(self.tool, "write", "it did not return", self.url) from None
            except BaseException:  # cancelled (see paste)
                _kill(proc)
                raise
            if proc.returncode != 0:
                err.seek(0)
                raise tool_failed(self.tool, "write", err.read().decode(errors="replace"), self.url)


class AioClipboardChannel(AioChannel):
    """The clipboard as an asyncio channel (see the blocking ``ClipboardChannel``)."""

    def __init__(
        self,
        backend: AioBackend,
        wire: WireFormat,
        url: str,
        opts: ClipboardOptions,
        first: bytes | None,
        inbox: AioBackend | None = None,
    ) -> None:
        self.url = url
        self._out = backend
        self._backend = backend if inbox is None else inbox  # where recv looks
        self._wire = wire
        self._text = opts.text
        self._interval = opts.poll_interval
        self._closing = asyncio.Event()
        self._lock = _tool_lock()
        self._last = first
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    @property
    def tool(self) -> str:
        """The tool in use, and where."""
        return self._out.tool.describe()

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = encode(self._wire, obj, self._text, self.url)
        if self._closing.is_set():
            raise closed_error(self)
        limit(timeout, self.url)  # a number of seconds (not "1", not NaN), or None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (TOOL_TIMEOUT if timeout is None else timeout)
        async with self._locked(deadline, "write"):
            await self._out.copy(data, deadline)
            if self._out is self._backend:  # one slot: do not receive our own message
                self._last = data
        self._sent += 1
        self._bytes_sent += len(data)

    async def recv(self, *, timeout: float | None = None) -> Any:
        limit(timeout, self.url)  # a number of seconds (not "1", not NaN), or None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._closing.is_set():
                raise closed_error(self)
            async with self._locked(deadline, "read"):
                now = await self._backend.paste(deadline, self._closing)
                changed = now is not None and now != self._last
                if changed:
                    self._last = now
            if changed and now is not None:
                self._received += 1
                self._bytes_received += len(now)
                return decode(self._wire, now, self._text, self.url)
            if self._closing.is_set():
                raise closed_error(self)
            wait = self._interval
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise Timeout(
                        f"the clipboard did not change within {timeout} s", endpoint=self.url
                    )
                wait = min(wait, left)
            try:
                async with within(wait):
                    await self._closing.wait()
            except TimeoutError:
                continue
            raise closed_error(self)

    @contextlib.asynccontextmanager
    async def _locked(self, deadline: float | None, what: str) -> AsyncIterator[None]:
        """Hold the tool lock, waiting for it no longer than ``deadline`` (the loop's clock),
        nor once the channel is closed (another channel's tool can hold it for 10 s).

        Raises:
            Timeout: another task's tool run held it until then. ChannelClosed.
        """
        try:
            async with within_at(deadline):
                acquired = await self._acquire()
        except TimeoutError:
            raise tool_timed_out(self._backend.tool, what, self.url) from None
        if not acquired:
            raise closed_error(self)
        try:
            yield
        finally:
            self._lock.release()

    async def _acquire(self) -> bool:
        """Take the tool lock: True, or False when the channel closed first."""
        if self._closing.is_set():
            return False
        acquire = asyncio.ensure_future(self._lock.acquire())
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((acquire, closing), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled or timed out: the lock is not kept
            closing.cancel()
            if acquire.done() and not acquire.cancelled():
                self._lock.release()
            else:
                acquire.cancel()
            raise
        closing.cancel()
        if acquire.done():
            return True
        acquire.cancel()  # (asyncio.Lock passes the lock on when a granted waiter cancels)
        return False

    def close(self) -> None:
        self._closing.set()
        self._backend.interrupt()  # wakes a recv() waiting for its paste

    async def aclose(self) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    @property
    def peer(self) -> PeerInfo | None:
        return PeerInfo(address=self.tool)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
        )


async def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioClipboardChannel:
    """A channel on the desktop clipboard (asyncio); options as the blocking ``connect``."""
    kw.pop("reconnect", None)
    opts = checked_options(endpoint, options, kw)
    return await _channel(endpoint, options, opts, listening=False)


async def _channel(
    endpoint: Endpoint, options: ChannelOptions, opts: ClipboardOptions, *, listening: bool
) -> AioClipboardChannel:
    out_tool, in_tool = opts.tool, opts.reply_tool
    if listening and in_tool is not None:
        out_tool, in_tool = in_tool, out_tool
    out = AioBackend(out_tool, endpoint.url)
    inbox = None if in_tool is None else AioBackend(in_tool, endpoint.url)
    loop = asyncio.get_running_loop()
    deadline = None if opts.timeout is None else loop.time() + opts.timeout
    first = await (out if inbox is None else inbox).paste(deadline)
    return AioClipboardChannel(out, options.wire(), endpoint.url, opts, first, inbox)


class AioClipboardListener(AioListener):
    """The clipboard as a listener: ``accept()`` returns its one channel, then waits."""

    def __init__(self, channel: AioClipboardChannel) -> None:
        self.url = channel.url
        self._channel: AioClipboardChannel | None = channel
        self._stopped = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._stopped.is_set()

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        if self._stopped.is_set():
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        ch, self._channel = self._channel, None
        if ch is not None:
            return ch
        try:
            async with within(timeout):
                await self._stopped.wait()
        except TimeoutError:
            raise Timeout(
                f"{self.url}: the clipboard has one channel, already accepted", endpoint=self.url
            ) from None
        raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)

    def close(self) -> None:
        self._stopped.set()


async def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioClipboardListener:
    """The clipboard as a listener (asyncio)."""
    kw.pop("backlog", None)
    kw.pop("reconnect", None)
    opts = checked_options(endpoint, options, kw)
    return AioClipboardListener(await _channel(endpoint, options, opts, listening=True))
