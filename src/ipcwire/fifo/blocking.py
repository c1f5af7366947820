"""``fifo:`` blocking driver.

* ``ipcwire.listen("fifo:///run/app.fifo")`` creates the FIFO (0600) if missing and reads it,
  holding the lock file ``/run/app.fifo.lock`` beside it: a second listener gets
  ``AddressInUse`` naming the first (a FIFO has one reader).
  ``accept()`` returns the receiving channel at once (a FIFO does not tell when a writer opens
  it); its ``recv`` waits for the writers' messages, honouring its timeout, and raises
  ``EndOfChannel`` once every writer that came has closed. The next ``accept()`` starts a new
  session for the next writers (``serve()`` does exactly that). A FIFO has one reader: while
  the previous channel is open, ``accept()`` waits for it to close. The listener itself keeps
  the FIFO open for reading as long as it lives, so writers can always open it and nothing
  written between two sessions is lost; writers get ``ChannelBroken`` (EPIPE) once the
  listener is closed.
* ``ipcwire.connect("fifo:///run/app.fifo")`` opens it for writing (waiting up to ``timeout``
  for a reader): a sending channel.
* ``?reply=/run/app.out.fifo`` makes both sides bidirectional (one client at a time): the
  client writes the first FIFO and reads the second. ``token=`` needs ``reply=``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._deadline import limit as wait_limit
from ipcwire._deadline import seconds_left
from ipcwire.channel import Channel, Listener
from ipcwire.errors import (
    ChannelClosed,
    ConfigurationError,
    Timeout,
)
from ipcwire.fifo._options import DEFAULT_TIMEOUT, WRITERS, check_token, private
from ipcwire.fifo._path import (
    CreatedFifos,
    FifoPaths,
    hold_session_once,
    lock_reply,
    open_read,
    open_write,
    resolve,
    wait_open_write,
)
from ipcwire.fifo._write_stream import FifoWriteStream
from ipcwire.options import ChannelOptions, file_mode, reject_unknown
from ipcwire.pipe._channel import PipeChannel
from ipcwire.pipe._fd import FdStream
from ipcwire.pipe._fdutil import close_fds
from ipcwire.pipe._handshake import fd_handshake

__all__ = ["FifoListener", "connect", "listen"]


def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    writers: str = "many",
    **kw: Any,
) -> PipeChannel:
    """Open the FIFO for writing (and the reply FIFO for reading); see the module.

    ``writers="many"`` (default) locks the FIFO while writing a message over PIPE_BUF bytes,
    so writers never interleave; ``"one"`` skips the lock when you know you are alone.

    Raises:
        ConnectionRefused: no FIFO, or no reader within ``timeout`` (10 s by default), or
            (with ``reply=``) another client still connected after it.
        PermissionDenied: the FIFO's mode refuses this user.
        ConfigurationError: a token without ``reply=``, or a bad option.
        AuthenticationFailed, HandshakeError, Timeout: with a token.
    """
    reject_unknown(kw, endpoint, ("timeout", "writers"))
    if writers not in WRITERS:
        raise ConfigurationError(f"writers={writers!r}: use 'many' or 'one'")
    paths = resolve(endpoint)
    check_token(options, paths)
    limit = DEFAULT_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + limit
    rfd = None
    if paths.reply is not None:  # first: a client waiting its turn must not be a writer yet
        rfd = private(lock_reply(paths.reply, endpoint.url, limit, deadline), paths.reply, options)
    try:
        wfd = private(open_write(paths.path, endpoint.url, limit, deadline), paths.path, options)
    except BaseException:
        if rfd is not None:
            os.close(rfd)
        raise
    try:
        stream = FifoWriteStream(
            rfd, wfd, endpoint=endpoint.url, poll_first=True, lock=writers == "many"
        )
    except BaseException:  # out of descriptors for its waker, say: the fds are still ours
        close_fds(rfd, wfd)
        raise
    return _channel(stream, options, client=True)


def _channel(stream: FdStream, options: ChannelOptions, *, client: bool) -> PipeChannel:
    try:
        wire, decoder = fd_handshake(stream, options, client=client)
    except BaseException:
        stream.close()
        raise
    return PipeChannel(stream, wire, options.url, decoder=decoder)


class _Session(PipeChannel):
    """A listener's channel: closing it lets the listener accept the next session."""

    on_close: Callable[[], None] | None = None

    def close(self) -> None:
        super().close()
        if self.on_close is not None:
            self.on_close()


def listen(
    endpoint: Endpoint, options: ChannelOptions, *, mode: int = 0o600, **kw: Any
) -> FifoListener:
    """Create (if missing) and read the FIFO; see the module.

    Raises:
        AddressInUse: the path exists and is not a FIFO (never replaced), or another
            listener reads the FIFO (the message names its process).
        PermissionDenied: cannot create or read it.
        ConfigurationError: a token without ``reply=``, or a bad option.
    """
    reject_unknown(kw, endpoint, ("mode",))
    paths = resolve(endpoint)
    check_token(options, paths, file_mode(mode, endpoint.url))
    return FifoListener(endpoint.url, paths, options, mode=mode)


class FifoListener(Listener):
    """The reading side of a FIFO; removes the FIFOs it created when closed."""

    def __init__(self, url: str, paths: FifoPaths, options: ChannelOptions, *, mode: int) -> None:
        self.url = url
        self.paths = paths
        self._options = options
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._current: PipeChannel | None = None
        self._stop = threading.Event()  # wakes an accept() that waits for a reply reader
        self._created = CreatedFifos(paths, url, mode)
        try:
            # Holding the read end open lets writers connect at once; in one-way mode the
            # listener keeps one open for its whole life (see accept).
            self._rfd: int | None = private(open_read(paths.path, url), paths.path, options)
            self._keeper = open_read(paths.path, url) if paths.reply is None else None
        except BaseException:
            self._created.remove()
            raise

    def accept(self, *, timeout: float | None = None) -> Channel:
        """The channel of the next writer session (see the module): at once in one-way mode;
        with ``reply=``, once a client opened the reply FIFO.

        A FIFO has one reader: while the channel accepted before is open, this waits for it
        to be closed (so ``serve()`` handles one session after the other).

        Raises:
            Timeout: the previous channel stayed open, or (reply mode) no client came.
            ChannelClosed: the listener was closed.
            ConfigurationError: ``timeout=nan``.
        """
        timeout = wait_limit(timeout, self.url)  # (NaN: a deadline that never passes)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
                if self._current is None or self._current.closed:
                    break
                self._cond.wait(
                    seconds_left(
                        deadline,
                        f"{self.url}: the channel accepted before is still open, and a FIFO "
                        f"has one reader; close it to accept the next writers",
                        self.url,
                    )
                )
            if self._rfd is None:  # by path: checked again (the FIFO may have been replaced)
                path = self.paths.path
                self._rfd = private(open_read(path, self.url), path, self._options)
            rfd = self._rfd
        wfd = None
        if self.paths.reply is not None:
            wfd = self._wait_for_reader(deadline, timeout)
        with self._lock:
            if self._closed:
                if wfd is not None:
                    os.close(wfd)
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
            self._rfd = None  # the channel owns it now; the next accept opens a fresh one
        try:
            stream = FdStream(rfd, wfd, endpoint=self.url, poll_first=True)
        except BaseException:
            close_fds(rfd, wfd)
            raise
        try:
            wire, decoder = fd_handshake(stream, self._options, client=False)
        except BaseException:
            stream.close()
            raise
        ch = _Session(stream, wire, self.url, decoder=decoder)
        ch.on_close = self._session_ended
        self._current = ch
        return ch

    def _session_ended(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _wait_for_reader(self, deadline: float | None, timeout: float | None) -> int:
        """Reply mode: the client is there once it opened the reply FIFO for reading."""
        assert self.paths.reply is not None
        pause = 0.001
        end = deadline if deadline is not None else float("inf")
        while True:
            if self._closed:
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
            try:
                fd = wait_open_write(self.paths.reply, self.url, end)
            except Timeout:
                raise Timeout(
                    f"no client connected to {self.url} within {timeout} s", endpoint=self.url
                ) from None
            if fd is not None:
                break
            self._stop.wait(pause)  # a FIFO does not signal a new reader: poll, briefly
            pause = min(pause * 2, 0.05)
        # The session's share of the turn lock (see lock_reply_once): the next client waits
        # until this session is closed. Refused only while a client is coming in.
        pause = 0.0005
        while not hold_session_once(fd):
            if self._closed or time.monotonic() >= end:
                os.close(fd)
                if self._closed:
                    raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
                raise Timeout(
                    f"no client connected to {self.url} within {timeout} s", endpoint=self.url
                )
            self._stop.wait(pause)
            pause = min(pause * 2, 0.01)
        return fd

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            self._cond.notify_all()
            for fd in (self._rfd, self._keeper):
                if fd is not None:
                    os.close(fd)
            self._rfd = self._keeper = None
        self._created.remove()
