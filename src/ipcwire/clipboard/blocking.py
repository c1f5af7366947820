"""The clipboard, blocking driver: copy and paste through the desktop's tools, and polling.

A toy, on purpose: the clipboard is one slot that the user sees and overwrites, so the last
writer wins and a message overwritten before the reader polled is lost; the same text sent
twice in a row is one change, so the reader sees it once. ``recv`` returns the next *change*
of the clipboard (checked every ``poll_interval`` seconds), not what was there when the channel
opened, and never what this channel itself copied.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO, Final

from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import limit
from ipcwire.channel import Channel, ChannelStatistics, Listener, PeerInfo, closed_error
from ipcwire.clipboard._content import decode, encode
from ipcwire.clipboard._options import ClipboardOptions, checked_options
from ipcwire.clipboard._tools import TOOL_TIMEOUT, Tool, tool_failed, tool_limit, tool_timed_out
from ipcwire.errors import ChannelClosed, Timeout
from ipcwire.options import ChannelOptions

__all__ = ["ClipboardChannel", "ClipboardListener", "ClipboardOptions", "connect", "listen"]

# One tool run at a time in this process: xclip serves a large selection (an INCR transfer)
# to one reader at a time, and a second reader meanwhile can wait until the timeout.
TOOL_LOCK: Final = threading.Lock()
LOCK_CHECK: Final = 0.05  # seconds: how soon a recv() waiting for TOOL_LOCK sees close()


class Backend:
    """Runs the tool's commands (blocking)."""

    def __init__(self, tool: Tool, url: str) -> None:
        self.tool = tool
        self.url = url
        self._running: subprocess.Popen[bytes] | None = None  # a recv()'s paste

    def paste(
        self, deadline: float | None = None, closing: threading.Event | None = None
    ) -> bytes | None:
        """The clipboard's content, or None when nothing is on it, or when ``closing`` was set
        (the run is then killed by :meth:`interrupt`: ``close()`` from another thread).

        Raises:
            ChannelBroken: the tool failed (for example the display went away).
            Timeout: it had not answered by ``deadline``.
        """
        limit, by_caller = tool_limit(deadline, time.monotonic())
        with subprocess.Popen(
            self.tool.paste, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.tool.env
        ) as proc:
            if closing is not None:
                self._running = proc  # for interrupt(), which sets `closing` first
                if closing.is_set():
                    proc.kill()
            try:
                out, err_bytes = proc.communicate(timeout=limit)
            except subprocess.TimeoutExpired as exc:
                proc.kill()
                proc.wait()
                if by_caller:
                    raise tool_timed_out(self.tool, "read", self.url) from exc
                raise tool_failed(self.tool, "read", "it did not answer", self.url) from exc
            except BaseException:  # (KeyboardInterrupt): not left running, nor waited for
                proc.kill()
                raise
            finally:
                self._running = None
        if closing is not None and closing.is_set() and proc.returncode != 0:
            return None  # killed by interrupt()
        if proc.returncode == 0:
            return out
        err = err_bytes.decode(errors="replace")
        if "not available" in err or "Nothing is copied" in err or "No selection" in err:
            return None  # an empty clipboard
        raise tool_failed(self.tool, "read", err, self.url)

    def interrupt(self) -> None:
        """Kill the paste that a ``recv()`` is waiting for (``close()``, any thread)."""
        proc = self._running
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()

    def copy(self, data: bytes, deadline: float) -> None:
        """Put ``data`` on the clipboard and wait until a paste returns it.

        Raises:
            Timeout: the clipboard did not show it in time. ChannelBroken: the tool failed.
        """
        # Its input is a file written whole before it starts: through a pipe, a sender killed
        # mid-write left the part written so far on the clipboard, as if it were a message.
        with tempfile.TemporaryFile() as src:
            src.write(data)
            src.seek(0)
            self._run_copy(src, deadline)
            while self.paste(deadline) != data:  # the forked server takes ownership later
                if time.monotonic() >= deadline:
                    raise Timeout(
                        f"{self.url}: the clipboard did not show the copied content in time "
                        f"(another program keeps overwriting it?)",
                        endpoint=self.url,
                    )
                time.sleep(0.005)
            src.truncate(0)  # the tool's server keeps it open while it serves, and has it all

    def _run_copy(self, src: BinaryIO, deadline: float) -> None:
        """Run the copy tool on ``src``.

        Raises:
            Timeout: it had not returned by ``deadline``. ChannelBroken: it failed.
        """
        # The copy tool forks a server that inherits stderr: a file, never a pipe we wait on.
        with tempfile.TemporaryFile() as err:
            limit, by_caller = tool_limit(deadline, time.monotonic())
            try:
                run = subprocess.run(
                    self.tool.copy,
                    stdin=src,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env=self.tool.env,
                    timeout=limit,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                if by_caller:
                    raise tool_timed_out(self.tool, "write", self.url) from exc
                raise tool_failed(self.tool, "write", "it did not return", self.url) from exc
            if run.returncode != 0:
                err.seek(0)
                raise tool_failed(self.tool, "write", err.read().decode(errors="replace"), self.url)


class ClipboardChannel(Channel):
    """The clipboard as a channel: ``send`` copies, ``recv`` waits for the next change."""

    def __init__(
        self,
        backend: Backend,
        wire: WireFormat,
        url: str,
        opts: ClipboardOptions,
        inbox: Backend | None = None,
    ):
        self.url = url
        self._out = backend
        self._backend = backend if inbox is None else inbox  # where recv looks
        self._wire = wire
        self._text = opts.text
        self._interval = opts.poll_interval
        self._closing = threading.Event()
        self._lock = TOOL_LOCK
        deadline = None if opts.timeout is None else time.monotonic() + opts.timeout
        self._last = self._backend.paste(deadline)  # what was there before: not a message
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    @property
    def tool(self) -> str:
        """The tool in use, and where (``xclip on :99``)."""
        return self._out.tool.describe()

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Copy ``obj`` to the clipboard (replacing whatever was there).

        Raises:
            Timeout: the clipboard did not take it within ``timeout`` (default 10 s).
            ChannelBroken: the tool failed. FrameTooLarge, ChannelClosed.
        """
        data = encode(self._wire, obj, self._text, self.url)
        if self._closing.is_set():
            raise closed_error(self)
        limit(timeout, self.url)  # a number of seconds (not "1", not NaN), or None
        deadline = time.monotonic() + (TOOL_TIMEOUT if timeout is None else timeout)
        with self._locked(deadline, "write"):
            self._out.copy(data, deadline)
            if self._out is self._backend:  # one slot: do not receive our own message
                self._last = data
        self._sent += 1
        self._bytes_sent += len(data)

    def recv(self, *, timeout: float | None = None) -> Any:
        """The clipboard's next content that differs from the last seen (polling).

        Raises:
            Timeout: no change in time. ChannelClosed, ChannelBroken.
            RemoteProtocolError: the content does not decode with this codec.
            FrameTooLarge: the content is over max_frame (skipped).
        """
        limit(timeout, self.url)  # a number of seconds (not "1", not NaN), or None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closing.is_set():
                raise closed_error(self)
            with self._locked(deadline, "read"):
                now = self._backend.paste(deadline, self._closing)
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
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(
                        f"the clipboard did not change within {timeout} s", endpoint=self.url
                    )
                wait = min(wait, left)
            if self._closing.wait(wait):
                raise closed_error(self)

    @contextlib.contextmanager
    def _locked(self, deadline: float | None, what: str) -> Iterator[None]:
        """Hold the tool lock, waiting for it no longer than ``deadline``, nor once the channel
        is closed (checked every ``LOCK_CHECK`` seconds: another channel's tool can hold it
        for 10 s).

        Raises:
            Timeout: another thread's tool run held it until then. ChannelClosed.
        """
        while True:
            left = None if deadline is None else limit(deadline - time.monotonic())
            wait = LOCK_CHECK if left is None else max(0.0, min(left, LOCK_CHECK))
            if self._lock.acquire(timeout=wait):
                break
            if self._closing.is_set():
                raise closed_error(self)
            if left is not None and left <= wait:
                raise tool_timed_out(self._backend.tool, what, self.url)
        try:
            yield
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop, waking a ``recv()`` in any thread (its paste is killed); what was copied stays
        on the clipboard (that is what clipboards do)."""
        self._closing.set()
        self._backend.interrupt()

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


def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> ClipboardChannel:
    """A channel on the desktop clipboard (``clipboard:``).

    Options: ``tool`` ("xclip", "xsel", "wl-clipboard", "pbcopy"; default: the first that
    works here), ``selection`` ("clipboard" or X11's "primary"), ``reply`` (the other
    selection: this side then sends on ``selection`` and receives on ``reply``, the listening
    side the other way round, so request and answer do not overwrite each other),
    ``display`` (an X display such as ":99", or a Wayland socket name), ``text`` (str in and
    out; the default with the bytes codec), ``poll_interval`` (seconds, default 0.1).

    Raises:
        MechanismUnavailable: no display or no tool, with what to install.
    """
    kw.pop("reconnect", None)
    return _channel(endpoint, options, checked_options(endpoint, options, kw), listening=False)


def _channel(
    endpoint: Endpoint, options: ChannelOptions, opts: ClipboardOptions, *, listening: bool
) -> ClipboardChannel:
    out, inbox = opts.tool, opts.reply_tool
    if listening and inbox is not None:
        out, inbox = inbox, out
    return ClipboardChannel(
        Backend(out, endpoint.url),
        options.wire(),
        endpoint.url,
        opts,
        None if inbox is None else Backend(inbox, endpoint.url),
    )


class ClipboardListener(Listener):
    """The clipboard in the listener shape: ``accept()`` returns its one channel at once,
    then waits until the listener is closed (there is no second client)."""

    def __init__(self, channel: ClipboardChannel) -> None:
        self.url = channel.url
        self._channel: ClipboardChannel | None = channel
        self._stopped = threading.Event()

    @property
    def closed(self) -> bool:
        return self._stopped.is_set()

    def accept(self, *, timeout: float | None = None) -> Channel:
        if self._stopped.is_set():
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        ch, self._channel = self._channel, None
        if ch is not None:
            return ch
        if not self._stopped.wait(timeout):
            raise Timeout(
                f"{self.url}: the clipboard has one channel, already accepted", endpoint=self.url
            )
        raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)

    def close(self) -> None:
        self._stopped.set()


def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> ClipboardListener:
    """The clipboard as a listener (see :class:`ClipboardListener`); options as
    :func:`connect`."""
    kw.pop("backlog", None)
    kw.pop("reconnect", None)
    opts = checked_options(endpoint, options, kw)
    return ClipboardListener(_channel(endpoint, options, opts, listening=True))
