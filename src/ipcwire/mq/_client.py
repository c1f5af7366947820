"""Opening an mq channel, the connecting side, with non-blocking steps only.

``connect``'s options checked, the pair of queues a client creates and the handshake it runs
on them (:class:`ClientSession`), and the words of a connect that cannot go on (once, for both
drivers). The blocking and asyncio drivers wait (poll or the event loop) and call these steps;
the steps never wait. Apart from ``_session.py`` and ``_rendezvous.py``, the listener's side:
a client never binds, adopts or accepts; the few steps both sides share (integer options, the
peer's pidfd) are ``_session.py``'s, used from here. See ``_proto.py`` for the messages.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import posix_ipc

from ipcwire._core.url import Endpoint
from ipcwire.errors import (
    ChannelBroken,
    ConnectionRefused,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.mq import limits
from ipcwire.mq._ends import abandoned_pairs, create_end_pipe, open_life_pipe, remove_end_pipe
from ipcwire.mq._proto import (
    HANDSHAKE_PRIORITY,
    Hello,
    decode_json,
    pair_names,
    strip_frame,
)
from ipcwire.mq._queue import MessageQueue, queue_name, unlink_queue
from ipcwire.mq._rendezvous import (
    lock_held,
    lock_note,
    lock_path,
)
from ipcwire.mq._session import (
    close_fd,
    elsewhere,
    int_option,
    open_pidfd,
    pickle_over_shared_queues,
    pid_namespace,
)
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions, reject_unknown

__all__ = [
    "ClientSession",
    "connect_args",
    "not_accepting",
    "not_answering",
    "open_rendezvous",
    "queue_sizes",
    "retry_delay",
]

log = logging.getLogger("ipcwire")

MIN_MSGSIZE = 512  # room for handshake messages whatever max_frame is
CONNECT_OPTIONS = ("timeout", "reconnect", "maxmsg", "msgsize", "mode")


def connect_args(
    endpoint: Endpoint,
    kw: dict[str, Any],
    *,
    timeout: float | None,
    maxmsg: int | None,
    msgsize: int | None,
) -> tuple[str, int | None, int | None, float]:
    """``connect``'s options checked: ``(queue name, maxmsg, msgsize, seconds the handshake
    may take)``; ``maxmsg``/``msgsize`` may come from the URL's query.

    Raises:
        ConfigurationError: an unknown keyword, or an option that is not an integer.
        InvalidURL: not a usable queue name.
    """
    reject_unknown(kw, endpoint, CONNECT_OPTIONS)
    name = queue_name(endpoint)
    maxmsg = int_option(endpoint, "maxmsg", maxmsg)
    msgsize = int_option(endpoint, "msgsize", msgsize)
    return name, maxmsg, msgsize, timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT


def open_rendezvous(name: str, url: str) -> MessageQueue:
    """The listener's queue, opened to announce a client on.

    Raises:
        ConnectionRefused: there is no listener (no queue, or nobody holds its lock):
            start it, or ``reconnect=``.
        PermissionDenied: another user's queue.
    """
    try:
        q = MessageQueue.open(name, read=False, url=url)
    except ConnectionRefused as exc:
        if lock_held(name):
            raise ConnectionRefused(
                f"nothing is listening at {url} in this IPC namespace: a live listener holds "
                f"its lock file {lock_path(name)}, but there is no queue {name} here, so it "
                f"runs in another IPC namespace (a container, `unshare --ipc`, bubblewrap's "
                f"--unshare-ipc). POSIX queues do not cross IPC namespaces: run both sides in "
                f"one, or use unix:// in a directory both share (docs/containers.md)",
                endpoint=url,
            ) from exc.__cause__
        raise ConnectionRefused(
            f"nothing is listening at {url}: there is no queue {name}. Start the listener "
            f"first, or pass reconnect=SECONDS to keep trying",
            endpoint=url,
        ) from exc.__cause__
    if lock_held(name) is False:  # (None: no lock file to tell by; connect as before)
        q.close()
        raise listener_gone(name, url)
    return q


def listener_gone(name: str, url: str) -> ConnectionRefused:
    """The error for a connect that found the queue ``name`` but no listener holding its
    lock: it was killed, or stopped without closing (or closed with ``unlink=False``)."""
    note = lock_note(name)
    pid, command = note.get("pid"), note.get("command")
    if isinstance(pid, int):
        who = f"its listener (pid {pid}" + (f", {command}" if isinstance(command, str) and
                                            command else "") + ") is gone"  # fmt: skip
        how = "killed, or it exited without closing the listener"
    else:
        who, how = "its listener is gone", "it closed with unlink=False, or was killed"
    return ConnectionRefused(
        f"nothing is listening at {url}: {who} ({how}): the queue {name} is there, but no "
        f"process holds its listener lock {lock_path(name)}. The queue stays until the "
        f"next listen() on {url}, which adopts it (ipcwire doctor {url} shows it). Start "
        f"the listener again, or pass reconnect=SECONDS to keep trying",
        endpoint=url,
    )


def retry_delay(
    exc: ConnectionRefused,
    reconnect: float | None,
    start: float,
    now: float,
    delays: Iterator[float],
) -> float:
    """How long to wait before opening the listener's queue again, after ``exc``.

    Raises:
        ConnectionRefused: ``exc`` when not asked to ``reconnect``; one that says so when
            ``reconnect`` seconds from ``start`` are over.
    """
    if not reconnect:
        raise exc
    left = start + reconnect - now
    if left <= 0:
        raise ConnectionRefused(f"{exc} (kept trying for {reconnect} s)") from exc
    return min(next(delays), left)


def not_answering(
    url: str, limit: float, backlog: int, *, listener_uid: int | None = None, mode: int = 0o600
) -> Timeout:
    """A connect whose announcement was not answered in time: the listener answers up to
    ``backlog`` clients that nobody accepted yet (its thread or event loop, accept() or
    not), then leaves the others in its queue. ``listener_uid``: the owner of the
    listener's queue; another user cannot open this client's queues when ``mode`` keeps the
    group out, which looks the same from here, so the message says so."""
    if listener_uid is not None and listener_uid != os.geteuid() and not mode & 0o060:
        return Timeout(
            f"the server at {url} did not answer within {limit:g} s: it runs as uid "
            f"{listener_uid} and this client's queues are mode {mode:#o}, which it may not "
            f"open. Connect with mode=0o660 and run both in a group you share (the "
            f"listener's own mode= likewise)",
            endpoint=url,
        )
    return Timeout(
        f"the server at {url} is not accepting connections: nobody answered within "
        f"{limit:g} s (its backlog of {backlog} clients waiting for accept() is full: it "
        f"is overloaded, or stopped calling accept(); or the listening process is stopped "
        f"or gone: ipcwire doctor {url} tells). Retry later, give connect() a longer "
        f"timeout=, or have the server accept faster (or listen with a larger backlog=)",
        endpoint=url,
    )


def not_accepting(url: str, backlog: int, limit: float) -> Timeout:
    """A connect that found the listener's queue of waiting clients full until its deadline."""
    return Timeout(
        f"the server at {url} is not accepting connections: its queue of {backlog} waiting "
        f"clients stayed full for {limit:g} s (it is overloaded, or stopped calling "
        f"accept()). Retry later, give connect() a longer timeout=, or have the server "
        f"accept faster (or listen with a larger backlog=)",
        endpoint=url,
    )


def queue_sizes(
    options: ChannelOptions, maxmsg: int | None, msgsize: int | None
) -> tuple[int, int, int]:
    """``(maxmsg, up msgsize, dn msgsize)`` for a client's pair of queues."""
    lim = limits()
    maxmsg = lim.msg_default if maxmsg is None else maxmsg
    size = lim.msgsize_default if msgsize is None else msgsize
    up = max(min(size, options.max_frame), MIN_MSGSIZE) if msgsize is None else size
    dn = max(min(size, options.max_frame), MIN_MSGSIZE)
    return maxmsg, up, dn


def _reclaim(up: str, url: str) -> None:
    """Remove the pairs (and end pipes) named like ``up`` of clients killed after they made
    them and before they announced them (see :func:`abandoned_pairs`)."""
    for pair in abandoned_pairs(up):
        for name in (pair, pair.removesuffix(".up") + ".dn"):
            try:
                unlink_queue(name)
            except posix_ipc.Error:  # (the pipe is this user's; a queue another's: left)
                pass
        remove_end_pipe(pair)
        log.info("%s: removed %s and its pair, left by a client that is gone", url, pair)


class ClientSession:
    """The connecting side: create the pair, announce it, run the handshake on it."""

    def __init__(
        self,
        base: str,
        options: ChannelOptions,
        *,
        maxmsg: int | None,
        msgsize: int | None,
        mode: int,
    ) -> None:
        self.url = options.url
        self.options = options
        if mode & 0o077 and options.codec.name == "pickle":
            raise pickle_over_shared_queues(self.url, f"mode={mode:#o} would let")
        n, up_size, dn_size = queue_sizes(options, maxmsg, msgsize)
        up_name, dn_name = pair_names(base)
        _reclaim(up_name, self.url)
        # The end pipe (_ends.py) first, kept only if the listener says it opened it too:
        # from here until the announcement, it names this pair for _reclaim.
        self.ends = create_end_pipe(up_name, mode, self.url)
        try:
            self.up = MessageQueue.create(
                up_name, maxmsg=n, msgsize=up_size, mode=mode, url=self.url
            )
        except BaseException:
            remove_end_pipe(up_name)
            close_fd(self.ends)
            raise
        try:
            self.dn = MessageQueue.create(
                dn_name, maxmsg=n, msgsize=dn_size, mode=mode, url=self.url
            )
        except BaseException:
            self.up.unlink()
            self.up.close()
            remove_end_pipe(up_name)
            close_fd(self.ends)
            raise
        self.ends_agreed = False
        self.fails_agreed = False  # the listener tells and takes a failed end (_proto.py)
        self.hs = options.client_handshake("length")  # queues keep boundaries
        self.server_pid: int | None = None
        self.server_elsewhere = False  # in another pid namespace: its pid means nothing here
        self.life_offered = False  # ... and it made the life pipe (_proto.py)

    def hello(self) -> bytes:
        """The announcement for the rendezvous queue."""
        return Hello(
            pid=os.getpid(),
            up=self.up.name,
            dn=self.dn.name,
            hello=strip_frame(self.hs.hello()),
            fails=True,
            pidns=pid_namespace(),
        ).encode()

    def feed(self, data: bytes, priority: int) -> bool:
        """Handle one message from ``dn``; True when the channel is open.

        Raises:
            AuthenticationFailed, HandshakeError, PermissionDenied, RemoteProtocolError.
        """
        if priority != HANDSHAKE_PRIORITY:
            raise RemoteProtocolError(
                f"{self.url} sent data before finishing the handshake", endpoint=self.url
            )
        msg = decode_json(data, "the listener", self.url)
        pid = msg.get("pid")
        if type(pid) is int and pid > 0:
            self.server_pid = pid
        if msg.get("ends") is True:
            self.ends_agreed = True
        if msg.get("fails") is True:
            self.fails_agreed = True
        if elsewhere(msg.get("pidns")):
            self.server_elsewhere = True
        if msg.get("life") is True:
            self.life_offered = True
        step = self.hs.receive(data)
        if step.send and not self.up.try_send(strip_frame(step.send), HANDSHAKE_PRIORITY):
            raise ChannelBroken(f"{self.url}: the new queue is full already", endpoint=self.url)
        return step.done

    def finish(self) -> int | None:
        """Both sides have the queues open: remove their names (and the end pipe's; the
        pipe is closed if the listener did not open it). The listener's pidfd (None where
        there is none), or, for a listener in another pid namespace, the write end of the
        life pipe it made (``server_pid`` is then None); the caller aborts the session when
        this raises.

        Raises:
            ChannelBroken: the listener exited during the handshake.
        """
        self.up.unlink()
        self.dn.unlink()
        remove_end_pipe(self.up.name)
        if not self.ends_agreed:
            close_fd(self.ends)
            self.ends = None
        if self.server_elsewhere:
            self.server_pid = None  # another namespace's pid: a pidfd on it would be wrong
            return open_life_pipe(self.up.name, self.url) if self.life_offered else None
        try:
            return open_pidfd(self.server_pid) if self.server_pid else None
        except ProcessLookupError:
            raise ChannelBroken(
                f"{self.url}: the listener exited during the handshake", endpoint=self.url
            ) from None

    def abort(self) -> None:
        """Give up: remove and close the pair and the end pipe."""
        remove_end_pipe(self.up.name)
        close_fd(self.ends)
        self.ends = None
        for q in (self.up, self.dn):
            q.unlink()
            q.close()
