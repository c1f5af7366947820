"""One POSIX message queue, with limits checked first and errors that say what to do.

:class:`MessageQueue` wraps a ``posix_ipc.MessageQueue`` opened non-blocking: every call here
either completes at once or reports "would block" (``None``/``False``), and the blocking and
asyncio drivers wait on :meth:`MessageQueue.fileno` (pollable on Linux) themselves. The public
:meth:`MessageQueue.send`/:meth:`MessageQueue.recv` add that wait for direct use of a queue
(many producers and consumers on one work queue, with priorities).
"""

from __future__ import annotations

import os
import resource
import select
import time
import warnings
from typing import Final

import posix_ipc

from ipcwire._core.url import Endpoint
from ipcwire._deadline import seconds_left
from ipcwire._poll import poll_ms
from ipcwire.errors import (
    AddressInUse,
    ChannelClosed,
    ConfigurationError,
    ConnectionRefused,
    FrameTooLarge,
    InvalidURL,
    IpcwireError,
    PermissionDenied,
    ResourceExhausted,
)
from ipcwire.mq import MqLimits, limits, queue_bytes

__all__ = [
    "PRIORITY_MAX",
    "MessageQueue",
    "check_name",
    "check_sizes",
    "kernel_name",
    "queue_name",
    "unlink_queue",
]

PRIORITY_MAX: Final = int(posix_ipc.QUEUE_PRIORITY_MAX)
NAME_MAX: Final = 255
# An mq:// channel's queue name (after its '/'): its listener's lock file,
# ipcwire-mq.<name>.lock, must fit in a file name of NAME_MAX bytes.
CHANNEL_NAME_MAX: Final = NAME_MAX - len("ipcwire-mq.") - len(".lock")
Buffer = bytes | bytearray | memoryview


def kernel_name(name: str) -> bytes:
    """The bytes the kernel sees for the queue ``name``: its UTF-8 encoding, in every locale.

    posix_ipc encodes a str name with the file-system encoding (and 1.3.2 crashes the
    interpreter, SIGSEGV, when that fails: a non-ASCII name under ``LC_ALL=C PYTHONUTF8=0``),
    so ipcwire always hands it bytes: ``mq:///\u00e9`` is the same queue under a UTF-8 and an
    ASCII locale, and in the languages that name queues in UTF-8. Lone surrogates
    ``\udc80``..``\udcff`` (how Python decodes bytes that are not UTF-8, such as a command-line
    argument) become those bytes again (``surrogateescape``).

    Raises:
        UnicodeEncodeError: another lone surrogate (no bytes stand for it).
    """
    return name.encode("utf-8", "surrogateescape")


def check_name(name: str, url: str) -> str:
    """The kernel name for a queue: ``/`` then 1 to 254 bytes without another ``/``.

    Raises:
        InvalidURL: the name cannot be a queue name.
    """
    if not name.startswith("/"):
        name = "/" + name
    try:
        size = len(kernel_name(name))
    except UnicodeEncodeError:
        raise InvalidURL(
            f"{url!r}: the message queue name {name!r} holds a lone surrogate, which has no "
            f"UTF-8 bytes: write the name as text (queue names are UTF-8)"
        ) from None
    if len(name) < 2 or "/" in name[1:] or size > NAME_MAX or "\0" in name:
        raise InvalidURL(
            f"{url!r}: a POSIX message queue name is one component of up to "
            f"{NAME_MAX - 1} bytes without '/', written mq:///name"
        )
    return name


def queue_name(endpoint: Endpoint) -> str:
    """The queue name in ``mq:///name`` (``mq://name`` and ``mq:name`` are accepted too),
    at most :data:`CHANNEL_NAME_MAX` bytes after its '/'.

    Raises:
        InvalidURL: not a usable queue name.
    """
    raw = endpoint.path or endpoint.host
    if endpoint.host and endpoint.path:
        raise InvalidURL(
            f"{endpoint.url!r}: write a message queue as mq:///name (three slashes; the name "
            f"has no '/')"
        )
    name = check_name(raw, endpoint.url)
    if len(kernel_name(name)) - 1 > CHANNEL_NAME_MAX:
        raise InvalidURL(
            f"{endpoint.url!r}: an mq channel's queue name is at most {CHANNEL_NAME_MAX} bytes "
            f"(its listener's lock file, ipcwire-mq.<name>.lock, must fit in a file name); "
            f"pick a shorter name (a plain MessageQueue takes up to {NAME_MAX - 1})"
        )
    return name


def check_sizes(maxmsg: int, msgsize: int, url: str, lim: MqLimits | None = None) -> None:
    """Refuse queue sizes this machine would refuse, naming the limit and how to raise it.

    Raises:
        ConfigurationError: over ``fs.mqueue.msg_max``/``msgsize_max``.
        ResourceExhausted: one queue of these sizes is over RLIMIT_MSGQUEUE.
    """
    lim = lim or limits()
    if maxmsg < 1 or msgsize < 1:
        raise ConfigurationError(f"maxmsg and msgsize for {url} must be at least 1")
    if maxmsg > lim.maxmsg_ceiling:
        raise ConfigurationError(
            f"maxmsg={maxmsg} for {url} is over this machine's limit of {lim.maxmsg_ceiling} "
            f"messages per queue (fs.mqueue.msg_max); raise it as root with "
            f"`sysctl -w fs.mqueue.msg_max={maxmsg}` (persist it in /etc/sysctl.d/), "
            f"or ask for fewer"
        )
    if msgsize > lim.msgsize_ceiling:
        raise ConfigurationError(
            f"msgsize={msgsize} for {url} is over this machine's limit of "
            f"{lim.msgsize_ceiling} bytes per message (fs.mqueue.msgsize_max); raise it as "
            f"root with `sysctl -w fs.mqueue.msgsize_max={msgsize}` (persist it in "
            f"/etc/sysctl.d/), or use a unix:// socket for large messages"
        )
    need = queue_bytes(maxmsg, msgsize)
    if lim.rlimit_bytes is not None and need > lim.rlimit_bytes:
        raise ResourceExhausted(
            f"a queue of {maxmsg} x {msgsize} bytes for {url} needs about {need} bytes, over "
            f"this user's RLIMIT_MSGQUEUE of {lim.rlimit_bytes} bytes; raise it (`ulimit -q`, "
            f"LimitMSGQUEUE= in a systemd unit, `msgqueue` in limits.conf, docker run "
            f"--ulimit msgqueue=...) or ask for less (maxmsg=/msgsize=, a listener's "
            f"backlog=)",
            endpoint=url,
        )


def unlink_queue(name: str) -> bool:
    """Remove a queue's name (:func:`kernel_name`); False when there was no such queue.

    Raises:
        posix_ipc.PermissionsError: not allowed to remove it.
    """
    raw = kernel_name(name)
    try:
        try:
            # (posix_ipc's unlink_message_queue takes a str only, encoded as UTF-8)
            posix_ipc.unlink_message_queue(raw.decode("utf-8"))
        except UnicodeDecodeError:
            # bytes that are not UTF-8: only an open queue's unlink() takes them
            q = posix_ipc.MessageQueue(raw, 0, read=True, write=False)
            try:
                q.unlink()
            finally:
                q.close()
    except posix_ipc.ExistentialError:
        return False
    return True


def _descriptor_free() -> bool:
    """True when this process can open one more descriptor: then an EMFILE from mq_open
    meant RLIMIT_MSGQUEUE, which the kernel reports with the same errno."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def explain_open_error(
    exc: BaseException, name: str, url: str, *, creating: bool, sizes: tuple[int, int] | None
) -> IpcwireError:
    """The ipcwire error for a failed ``mq_open``."""
    if isinstance(exc, posix_ipc.ExistentialError):
        if creating:
            return AddressInUse(
                f"the queue {name} already exists ({url}): an earlier run left it (a queue "
                f"stays until it is unlinked or the machine reboots), or another program "
                f"uses it. Use it as it is (MessageQueue.open({name!r}), or create() with "
                f"exclusive=False), or, if it is left over, remove it first: python -c "
                f'"import posix_ipc; posix_ipc.unlink_message_queue({name!r})" (and have '
                f"the program unlink() the queues it creates when done)",
                endpoint=url,
            )
        return ConnectionRefused(
            f"there is no queue {name} ({url}): create it first (MessageQueue.create("
            f"{name!r})), or start the program that does (an mq:// listener creates its "
            f"queue), then open it again",
            endpoint=url,
        )
    if isinstance(exc, posix_ipc.PermissionsError):
        return PermissionDenied(
            f"permission denied opening the queue {name} ({url}): queues are created mode 0600, "
            f"so only their owner (uid) may open them; run as the owner, or create it with "
            f"mode=0o660 and a shared group",
            endpoint=url,
        )
    text = str(exc)
    if "maximum number of files" in text:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if _descriptor_free():
            lim = limits()
            used = f" ({sizes[0]} x {sizes[1]} bytes asked for)" if sizes else ""
            return ResourceExhausted(
                f"cannot create the queue {name} for {url}: this user's queues already hold "
                f"most of RLIMIT_MSGQUEUE ({lim.rlimit_bytes} bytes, `ulimit -q`){used}. Each "
                f"open ipcwire mq channel holds two queues of maxmsg x msgsize bytes: close "
                f"unused channels, pass smaller maxmsg=/msgsize=, or raise the limit "
                f"(`ulimit -q`, LimitMSGQUEUE=, `msgqueue` in limits.conf)",
                endpoint=url,
            )
        return ResourceExhausted(
            f"out of file descriptors opening the queue {name} for {url} (limit {soft}); "
            f"close unused channels or raise `ulimit -n`",
            endpoint=url,
        )
    if "Insufficient space" in text:
        return ResourceExhausted(
            f"cannot create the queue {name} for {url}: the system-wide number of queues "
            f"(fs.mqueue.queues_max = {limits().queues_max}) is reached; close channels, or "
            f"raise it as root with `sysctl -w fs.mqueue.queues_max=N`",
            endpoint=url,
        )
    if isinstance(exc, ValueError) and sizes is not None:
        lim = limits()
        return ConfigurationError(
            f"the kernel refused a queue of {sizes[0]} x {sizes[1]} bytes for {url} "
            f"(limits here: msg_max {lim.maxmsg_ceiling}, msgsize_max {lim.msgsize_ceiling})",
            endpoint=url,
        )
    if isinstance(exc, MemoryError):
        return ResourceExhausted(f"the kernel is out of memory opening {name}", endpoint=url)
    return ResourceExhausted(f"cannot open the queue {name} for {url}: {exc}", endpoint=url)


class MessageQueue:
    """One POSIX message queue, non-blocking underneath.

    Use :meth:`create` or :meth:`open`. ``send``/``recv`` wait (with a timeout) when the queue
    is full or empty; ``try_send``/``try_recv`` never wait. Priorities run from 0 to
    ``PRIORITY_MAX``; a higher one is received first, FIFO within one priority.
    """

    __slots__ = ("_q", "fileno_", "maxmsg", "msgsize", "name", "owner", "url")

    def __init__(self, q: posix_ipc.MessageQueue, name: str, url: str, *, owner: bool) -> None:
        q.block = False
        self._q: posix_ipc.MessageQueue | None = q
        self.name = name
        self.url = url
        self.owner = owner
        self.fileno_: int = q.mqd
        self.maxmsg: int = q.max_messages
        self.msgsize: int = q.max_message_size

    @classmethod
    def create(
        cls,
        name: str,
        *,
        maxmsg: int | None = None,
        msgsize: int | None = None,
        mode: int = 0o600,
        exclusive: bool = True,
        url: str | None = None,
    ) -> MessageQueue:
        """Create a queue (``exclusive``: fail if it exists), sizes checked against the limits.

        Raises:
            AddressInUse: it exists (with ``exclusive``).
            ConfigurationError: sizes over this machine's limits (named in the message).
            ResourceExhausted: RLIMIT_MSGQUEUE (too small for this queue, or used up) or
                queues_max reached.
            PermissionDenied, InvalidURL.
        """
        url = url or f"mq://{name}"
        name = check_name(name, url)
        lim = limits()
        maxmsg = lim.msg_default if maxmsg is None else maxmsg
        msgsize = lim.msgsize_default if msgsize is None else msgsize
        check_sizes(maxmsg, msgsize, url, lim)
        flags = posix_ipc.O_CREX if exclusive else posix_ipc.O_CREAT
        try:
            q = posix_ipc.MessageQueue(
                kernel_name(name), flags, mode=mode, max_messages=maxmsg, max_message_size=msgsize
            )
        except (posix_ipc.Error, OSError, ValueError, MemoryError) as exc:
            raise explain_open_error(
                exc, name, url, creating=True, sizes=(maxmsg, msgsize)
            ) from exc
        try:
            os.fchmod(q.mqd, mode)  # exactly the mode asked for, whatever the umask
        except OSError:
            pass
        return cls(q, name, url, owner=True)

    @classmethod
    def open(
        cls, name: str, *, read: bool = True, write: bool = True, url: str | None = None
    ) -> MessageQueue:
        """Open an existing queue.

        Raises:
            ConnectionRefused: no such queue.
            PermissionDenied: not allowed to open it.
        """
        url = url or f"mq://{name}"
        name = check_name(name, url)
        try:
            q = posix_ipc.MessageQueue(kernel_name(name), 0, read=read, write=write)
        except (posix_ipc.Error, OSError, ValueError, MemoryError) as exc:
            raise explain_open_error(exc, name, url, creating=False, sizes=None) from exc
        return cls(q, name, url, owner=False)

    # -- non-blocking primitives -------------------------------------------------------------
    def _queue(self) -> posix_ipc.MessageQueue:
        q = self._q
        if q is None:
            raise ChannelClosed(f"the queue {self.name} is closed", endpoint=self.url)
        return q

    def try_send(self, data: Buffer, priority: int) -> bool:
        """Enqueue now, or return False when the queue is full.

        Raises:
            FrameTooLarge: longer than the queue's msgsize (nothing was sent).
        """
        try:
            self._queue().send(data, 0, priority)
        except posix_ipc.BusyError:
            return False
        except ValueError as exc:
            size = memoryview(data).nbytes
            if size > self.msgsize:
                raise FrameTooLarge(
                    f"message of {size} bytes not sent to {self.url}: over the queue's msgsize "
                    f"of {self.msgsize} bytes; open the queue with a larger msgsize= (up to "
                    f"{limits().msgsize_ceiling} here) or use a unix:// socket",
                    size=size,
                    limit=self.msgsize,
                    endpoint=self.url,
                ) from exc
            raise ConfigurationError(f"bad priority {priority} for {self.url}") from exc
        return True

    def try_recv(self) -> tuple[bytes, int] | None:
        """Dequeue the next message and its priority now, or None when the queue is empty."""
        try:
            data, prio = self._queue().receive(0)
        except posix_ipc.BusyError:
            return None
        return data, prio

    def fileno(self) -> int:
        """The queue descriptor: readable when a message waits, writable when there is room."""
        return self.fileno_

    @property
    def current_messages(self) -> int:
        """Messages in the queue now."""
        return int(self._queue().current_messages)

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._q is None

    # -- waiting versions, for direct use ------------------------------------------------------
    def send(self, data: Buffer, *, priority: int = 0, timeout: float | None = None) -> None:
        """Enqueue ``data``, waiting while the queue is full.

        Raises:
            Timeout: still full after ``timeout`` seconds.
            FrameTooLarge: over the queue's msgsize.
            ConfigurationError: a priority outside 0..PRIORITY_MAX.
            ChannelClosed: the queue was closed.
        """
        if not 0 <= priority <= PRIORITY_MAX:
            raise ConfigurationError(f"priority must be from 0 to {PRIORITY_MAX}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.try_send(data, priority):
            self._wait(select.POLLOUT, deadline, "sending to (the queue is full)")

    def recv(self, *, timeout: float | None = None) -> tuple[bytes, int]:
        """Dequeue the next message (highest priority first) and its priority.

        Raises:
            Timeout: still empty after ``timeout`` seconds.
            ChannelClosed: the queue was closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got = self.try_recv()
            if got is not None:
                return got
            self._wait(select.POLLIN, deadline, "receiving from (the queue is empty)")

    def _wait(self, event: int, deadline: float | None, doing: str) -> None:
        wait = seconds_left(deadline, f"timed out {doing} {self.url}", self.url)
        poller = select.poll()
        poller.register(self.fileno_, event)
        poller.poll(poll_ms(wait))

    def unlink(self) -> None:
        """Remove the queue's name (open descriptors keep working); idempotent."""
        unlink_queue(self.name)

    def close(self) -> None:
        """Close this descriptor; idempotent."""
        q, self._q = self._q, None
        if q is not None:
            try:
                q.close()
            except posix_ipc.Error:
                pass

    def __del__(self) -> None:
        # posix_ipc does not close a queue's descriptor when its object is collected: the
        # queue would hold its memory (charged to RLIMIT_MSGQUEUE) until the process exits.
        q = getattr(self, "_q", None)
        if q is not None:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)
            self.close()

    def __enter__(self) -> MessageQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._q is None else f"{self.maxmsg} x {self.msgsize} bytes"
        return f"<MessageQueue {self.name} {state}>"
