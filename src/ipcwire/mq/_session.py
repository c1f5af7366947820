"""Opening an mq channel, the listener's side, with non-blocking steps only.

The clients a listener is still handshaking with (:class:`ServerSession`, :func:`announced`);
its rendezvous queue and ownership lock are ``_rendezvous.py``'s. The blocking and asyncio
drivers wait (poll or the event loop) and call these steps; the steps never wait. The
connecting side is ``_client.py``; the few steps both sides share (integer options, the new
channel's wire format, the peer's pidfd) are here, and ``_client.py`` uses them. See
``_proto.py`` for the messages.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import posix_ipc

from ipcwire._core.handshake import ClientHandshake, ServerHandshake
from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._oserror import ACCEPT_RETRY
from ipcwire.errors import (
    ConfigurationError,
    InvalidURL,
    IpcwireError,
    PermissionDenied,
    RemoteProtocolError,
    ResourceExhausted,
)
from ipcwire.mq._ends import (
    make_life_pipe,
    open_end_pipe,
    remove_end_pipe,
    remove_life_pipe,
)
from ipcwire.mq._proto import (
    HANDSHAKE_PRIORITY,
    Hello,
    decode_json,
    encode_json,
    strip_frame,
)
from ipcwire.mq._queue import MessageQueue, check_name, unlink_queue
from ipcwire.options import ChannelOptions

__all__ = [
    "Deferred",
    "ServerSession",
    "announced",
    "channel_wire",
    "close_fd",
    "elsewhere",
    "int_option",
    "open_pidfd",
    "pickle_over_shared_queues",
    "pid_namespace",
    "server_accept",
    "unlink_clients",
    "valid_pair",
]

log = logging.getLogger("ipcwire")


# -- steps both sides take --------------------------------------------------------------------


def int_option(endpoint: Endpoint, name: str, value: int | None) -> int | None:
    """An integer option from a keyword argument, else from the URL's query.

    Raises:
        ConfigurationError: not an integer.
    """
    raw: object = value if value is not None else endpoint.params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name}={raw!r} for {endpoint}: must be an integer") from None


def channel_wire(options: ChannelOptions, hs: ClientHandshake | ServerHandshake) -> WireFormat:
    """A new channel's wire format: its sends are limited by the peer's ``max_frame``."""
    wire = options.wire()
    wire.send_limit = hs.peer_max_frame
    return wire


def open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits; None where unsupported.

    Raises:
        ProcessLookupError: the process is already gone.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or pid == os.getpid():
        return None
    try:
        fd: int = pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError:
        return None
    return fd


def pid_namespace() -> str | None:
    """This process's pid namespace (``pid:[inode]``), sent to the peer so it can tell
    whether this side's pid means anything there (``_proto.py``); None without /proc."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def elsewhere(peer_pidns: object) -> bool:
    """True when the peer said it is in another pid namespace than this process."""
    own = pid_namespace()
    return isinstance(peer_pidns, str) and own is not None and peer_pidns != own


def close_fd(fd: int | None) -> None:
    """Close an fd if there is one, ignoring errors."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


# -- the listener's side ----------------------------------------------------------------------


@dataclass(eq=False)
class ServerSession:
    """A client the listener is still handshaking with."""

    up: MessageQueue
    dn: MessageQueue
    hs: ServerHandshake
    pid: int  # as the client sees itself (for the log)
    pidfd: int | None  # the client's pidfd, or the life pipe's read end (see ``life``)
    deadline: float
    ends: int | None = field(default=None)  # the end pipe, when the client made one
    fails: bool = field(default=False)  # the client tells and takes a failed end (_proto.py)
    done: bool = field(default=False)
    # the client is in another pid namespace: its pid means nothing here (peer.pid is None),
    # and ``pidfd`` is the life pipe (_proto.py), whose name the channel removes when done
    life: bool = field(default=False)

    @property
    def peer_pid(self) -> int | None:
        """The client's pid in this process's pid namespace, None where not known."""
        return None if self.life else self.pid

    def feed(self, data: bytes, priority: int) -> bool:
        """Handle one message from ``up``; True when open. Failures raise (and reply first).

        Raises:
            IpcwireError: the client failed the handshake.
        """
        if priority != HANDSHAKE_PRIORITY:
            raise RemoteProtocolError("the client sent data before finishing the handshake")
        return self._step(data)

    def _step(self, data: bytes) -> bool:
        step = self.hs.receive(data)
        if step.send:
            reply = decode_json(strip_frame(step.send), "this listener", "")
            reply["pid"] = os.getpid()
            pidns = pid_namespace()
            if pidns is not None:
                reply["pidns"] = pidns
            if self.life and self.pidfd is not None:
                reply["life"] = True  # the client opens the life pipe's write end
            if self.ends is not None:
                reply["ends"] = True  # the client keeps its end pipe
            if self.fails:
                reply["fails"] = True  # both ends tell a failed end from a clean one
            self.dn.try_send(encode_json(reply), HANDSHAKE_PRIORITY)
        if step.error is not None:
            raise step.error
        self.done = step.done
        return step.done

    def refuse(self, error: IpcwireError) -> None:
        """Refuse the client before its handshake, telling it why (it raises ``error``'s
        type with the text).

        Raises:
            IpcwireError: ``error``.
        """
        step = self.hs.reject(error, "permission")
        if step.send:
            self.dn.try_send(strip_frame(step.send), HANDSHAKE_PRIORITY)
        raise error

    def advance(self, url: str) -> bool | None:
        """Read the client's next handshake message if one is there: True when the channel is
        open, False when not yet, None when the client failed the handshake (logged; drop
        it)."""
        try:
            got = self.up.try_recv()
            return False if got is None else self.feed(*got)
        except IpcwireError as exc:
            log.warning("%s refused client pid %d: %s", url, self.pid, exc)
            return None

    def close(self) -> None:
        """Drop this client."""
        self.up.close()
        self.dn.close()
        close_fd(self.pidfd)
        self.pidfd = None
        close_fd(self.ends)
        self.ends = None
        if self.life:
            remove_life_pipe(self.up.name)


def unlink_clients(name: str) -> None:
    """Remove a client's queue name. Another user's (a shared group, mode=0o660) may only be
    removed by its owner (/dev/mqueue is sticky): that is left to the client."""
    try:
        unlink_queue(name)
    except posix_ipc.PermissionsError:
        log.info("%s belongs to another user; its owner removes it", name)


def valid_pair(hello: Hello, base: str) -> bool:
    """Only queues named like a pair for this listener may be opened and unlinked."""
    if not hello.up.endswith(".up") or hello.dn != hello.up[:-3] + ".dn":
        return False
    try:
        check_name(hello.up, "")
        check_name(hello.dn, "")
    except InvalidURL:  # a NUL, too long: no queue of ours
        return False
    tag = hello.up[:-3]
    return tag.startswith((base + ".", "/ipcwire.")) and "/" not in tag[1:]


def _not_ours(url: str, pid: int, exc: IpcwireError) -> None:
    """The client's queues may not be opened by this listener's user (the client is alive:
    "is gone" was logged here before)."""
    log.warning(
        "%s cannot open the queues of client pid %d (%s): it runs as another user "
        "and its queues are not open to this one; both sides need mode=0o660 and a group "
        "they share",
        url,
        pid,
        exc,
    )


def server_accept(
    data: bytes, base: str, options: ChannelOptions, timeout: float
) -> ServerSession | None:
    """Handle one announcement from the rendezvous queue: open the client's pair, unlink
    its names, start the handshake. None when the client is dropped (logged).

    Raises:
        ResourceExhausted: this process is out of descriptors; nothing was changed, so the
            same announcement can be handled again later.
    """
    url = options.url
    try:
        hello = Hello.decode(data, url)
    except IpcwireError as exc:
        log.warning("%s dropped an announcement: %s", url, exc)
        return None
    if not valid_pair(hello, base):
        log.warning("%s ignored an announcement of foreign queues %s", url, hello.up)
        return None
    try:
        up = MessageQueue.open(hello.up, write=False, url=url)
    except ResourceExhausted:
        raise  # this side's shortage: the client's queues stay, for a later try
    except PermissionDenied as exc:
        _not_ours(url, hello.pid, exc)
        return None
    except IpcwireError as exc:
        log.info("%s: client pid %d is gone (%s)", url, hello.pid, exc)
        unlink_clients(hello.dn)
        remove_end_pipe(hello.up)
        return None
    try:
        dn = MessageQueue.open(hello.dn, read=False, url=url)
    except ResourceExhausted:
        up.close()
        raise
    except PermissionDenied as exc:
        up.close()
        _not_ours(url, hello.pid, exc)
        return None
    except IpcwireError as exc:
        log.info("%s: client pid %d is gone (%s)", url, hello.pid, exc)
        unlink_clients(up.name)
        remove_end_pipe(up.name)
        up.close()
        return None
    try:
        ends = open_end_pipe(up.name, os.fstat(up.fileno()).st_uid, url)
    except ResourceExhausted:
        up.close()
        dn.close()
        raise
    # a client in another pid namespace: its pid means nothing here (another process's, or
    # none); the life pipe tells its exit instead (_proto.py)
    life = elsewhere(hello.pidns)
    life_fd = None
    if life:
        try:
            life_fd = make_life_pipe(up.name, os.fstat(up.fileno()).st_mode & 0o777, url)
        except ResourceExhausted:
            up.close()
            dn.close()
            close_fd(ends)
            raise
    # the client removes them too, once open: here for a client that died meanwhile
    unlink_clients(up.name)
    unlink_clients(dn.name)
    remove_end_pipe(up.name)
    try:
        pidfd = life_fd if life else open_pidfd(hello.pid)
    except ProcessLookupError:
        log.info("%s: client pid %d exited before it was accepted", url, hello.pid)
        up.close()
        dn.close()
        close_fd(ends)
        return None
    session = ServerSession(
        up,
        dn,
        options.server_handshake("length"),
        hello.pid,
        pidfd,
        time.monotonic() + timeout,
        ends=ends,
        fails=hello.fails,
        life=life,
    )
    try:
        shared = shared_pair(up, dn, options)
        if shared is not None:
            session.refuse(shared)
        session._step(hello.hello)
    except IpcwireError as exc:
        log.warning("%s refused client pid %d: %s", url, hello.pid, exc)
        session.close()
        return None
    return session


def pickle_over_shared_queues(url: str, what: str) -> ConfigurationError:
    """The error for pickle over a pair of queues that others may open."""
    return ConfigurationError(
        f"codec='pickle' refused for {url}: {what} other users open the channel's queues, "
        f"and a queue does not tell one writer from another. The token authenticates only "
        f"the handshake, not the messages after it: a pickle another user put into a queue "
        f"would run here. Use codec='msgpack' or 'json' (safe with any mode), or, when only "
        f"you run both ends, connect with mode=0o600 (the default)",
        endpoint=url,
    )


def shared_pair(
    up: MessageQueue, dn: MessageQueue, options: ChannelOptions
) -> ConfigurationError | None:
    """With pickle, the error for a client's pair that others may open (``connect(mode=
    0o660)``), else None."""
    if options.codec.name != "pickle":
        return None
    have = (os.fstat(up.fileno()).st_mode | os.fstat(dn.fileno()).st_mode) & 0o777
    if not have & 0o077:
        return None
    what = f"the client's queues are mode {have:#o}, which lets"
    return pickle_over_shared_queues(options.url, what)


@dataclass
class Deferred:
    """An announcement a listener could not take for want of descriptors: kept, and taken
    again once ``retry_at`` (monotonic) has passed; the client waits, within its timeout.
    Until then the listener does not read its rendezvous queue (it would only fail again)."""

    held: bytes | None = None
    retry_at: float = 0.0

    def paused(self) -> bool:
        return time.monotonic() < self.retry_at

    def due(self) -> bool:
        """An announcement is held and may be tried again now."""
        return self.held is not None and not self.paused()


def announced(
    q: MessageQueue, options: ChannelOptions, deferred: Deferred
) -> Iterator[ServerSession]:
    """The clients announced on the rendezvous queue ``q`` so far, each with its handshake
    started (see :func:`server_accept`); 64 announcements at most, so accepting them does
    not starve the rest of the caller's work. Out of descriptors, the announcement goes to
    ``deferred`` and nothing more is read until its retry time."""
    if deferred.paused():
        return
    for _ in range(64):
        data, deferred.held = deferred.held, None
        if data is None:
            got = q.try_recv()
            if got is None:
                return
            data = got[0]
        try:
            s = server_accept(data, q.name, options, options.handshake_timeout)
        except ResourceExhausted as exc:
            deferred.held = data
            deferred.retry_at = time.monotonic() + ACCEPT_RETRY
            log.warning("%s; the client waits, accepting again in %g s", exc, ACCEPT_RETRY)
            return
        if s is not None:
            yield s
