"""Translate OSErrors into ipcwire errors, once per driver, with a message that helps."""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
from collections.abc import Iterator

from ipcwire.errors import (
    ChannelBroken,
    ConnectionRefused,
    IpcwireError,
    PermissionDenied,
    ResourceExhausted,
    Timeout,
)

__all__ = [
    "ACCEPT_RETRY",
    "GAVE_UP",
    "OUT_OF_RESOURCES",
    "UNREACHABLE",
    "accept_failed",
    "gave_up",
    "no_answer",
    "translate",
    "translated",
    "unreachable",
]

# accept() failing with one of these leaves the client in the kernel's backlog and the socket
# readable: a listener pauses ACCEPT_RETRY seconds (as asyncio does) instead of spinning
OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
ACCEPT_RETRY = 1.0

_BROKEN = {
    errno.EPIPE: "the peer closed its end (broken pipe)",
    errno.ECONNRESET: "the peer reset the connection (it died or closed with unread data)",
    errno.ECONNABORTED: "the connection was aborted",
    errno.ENOTCONN: "the socket is not connected",
    errno.ESHUTDOWN: "the connection was shut down",
    errno.EHOSTUNREACH: "the host is unreachable",
    errno.ENETUNREACH: "the network is unreachable",
    errno.ENETDOWN: "the network is down",
    errno.EBADF: "the file descriptor was closed underneath the channel",
}

# Out of room on a file system: the spool's files, a socket file, a FIFO, a lock file.
_NO_ROOM = {
    errno.ENOSPC: (
        "no space left on the file system (or no free inodes: df -h, df -i); free some, or "
        "use a directory on another one"
    ),
    errno.EDQUOT: "over your disk quota (quota -s); free some space, or ask for a larger quota",
    errno.EFBIG: (
        "over the file size limit (RLIMIT_FSIZE, ulimit -f, or the file system's own); raise "
        "it, or send smaller messages"
    ),
}
_PREPOSITIONS = frozenset({"on", "to", "from", "with", "in", "at", "for", "into", "of"})
# On a connected TCP socket, the kernel's ETIMEDOUT is no deadline of the caller's: TCP gave
# the peer up (keepalive probes, or resent data, went unanswered), and the connection is gone;
# it reports EHOSTUNREACH or ENETUNREACH instead when that is what it last heard of the
# peer's address (no answer to ARP, an ICMP message). Connecting keeps its Timeout.
GAVE_UP = frozenset({errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH})
_ESTABLISHED = frozenset({"receiving from", "sending to"})
# A connect that found no way to the host: no route to it (locally, or a router's ICMP), or no
# answer to ARP on its own network. Often passing (a route, a link or a neighbour coming back):
# reconnect= retries it, as it retries a refusal.
UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH})


def unreachable_cause(exc: BaseException) -> OSError | None:
    """The OSError under ``exc`` (its cause, or theirs) when it says the host is unreachable
    (UNREACHABLE: a route or ARP that may come back), which connect() retries within
    ``reconnect=`` as it does a refusal; None otherwise."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in UNREACHABLE:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def unreachable(
    exc: OSError,
    endpoint: str,
    *,
    reconnect: float | None,
    retries: bool = True,
    detail: str = "",
) -> ChannelBroken:
    """The error for a connect to ``endpoint`` that failed with ``exc`` (its errno in
    UNREACHABLE), after retrying for ``reconnect`` seconds if that was given; ``retries``:
    whether this connect() retries it under ``reconnect=`` (so may say to pass it);
    ``detail``: the library's own words, added in parentheses."""
    code = exc.errno or errno.EHOSTUNREACH
    why = (
        f"{_BROKEN.get(code, exc.strerror)} ({exc.strerror}: no route to it, or no answer on "
        f"its network)"
    )
    more = f" ({detail})" if detail else ""
    if reconnect:
        return ChannelBroken(
            f"cannot connect to {endpoint}: {why}, still after trying for {reconnect} s "
            f"(reconnect=): check the address and the route (ip route get HOST), or pass a "
            f"larger reconnect={more}",
            endpoint=endpoint,
        )
    wait = "; or pass reconnect=SECONDS to keep trying until it is reachable" if retries else ""
    return ChannelBroken(
        f"cannot connect to {endpoint}: {why}: check the address and the route "
        f"(ip route get HOST){wait}{more}",
        endpoint=endpoint,
    )


def no_answer(endpoint: str, limit: float, reconnect: float | None) -> Timeout:
    """The error for a connect attempt to ``endpoint`` that got no answer within ``limit``
    seconds (its timeout=, which bounds each attempt; reconnect= does not retry it)."""
    retry = (
        f" (reconnect={reconnect} retries attempts that are refused or find no route, not one "
        f"that gets no answer: raise timeout= too)"
        if reconnect
        else ""
    )
    return Timeout(
        f"connecting to {endpoint} took over {limit} s (timeout=, the limit of each attempt): "
        f"nothing answered: the host is down, or the network to it drops the packets (a "
        f"partition, a firewall); check the address and the route, or pass a larger "
        f"timeout= to wait longer{retry}",
        endpoint=endpoint,
    )


def gave_up(exc: OSError, endpoint: str, doing: str) -> ChannelBroken | None:
    """The error for ``exc`` met on an established stream connection to ``endpoint`` while
    ``doing`` ("receiving from", "sending to"), if it says that TCP gave the peer up (GAVE_UP):
    the peer stopped answering, so the kernel ended the connection. None for anything else.
    (``translate`` does this for ETIMEDOUT; a stream driver asks first, for the others, which
    on a datagram socket mean something else.)"""
    code = exc.errno
    if code not in GAVE_UP or isinstance(exc, IpcwireError):
        return None
    heard = "" if code == errno.ETIMEDOUT else f"; last, {_BROKEN[code]}"
    return ChannelBroken(
        f"{endpoint} broke while {doing} it: the peer stopped answering (TCP keepalive probes "
        f"or resent data went unanswered{heard}): its machine or the network to it went away; "
        f"connect again once it is reachable",
        endpoint=endpoint,
    )


def translate(exc: OSError, endpoint: str, doing: str) -> IpcwireError:
    """The ipcwire error for ``exc`` raised while ``doing`` (e.g. "sending") at ``endpoint``.

    The caller raises it ``from exc`` so the OSError stays available as ``__cause__``.
    """
    code = exc.errno
    if isinstance(exc, IpcwireError):
        return exc
    if code == errno.EMFILE:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return ResourceExhausted(
            f"out of file descriptors while {doing} {endpoint}: this process has all {soft} "
            f"it may open ({exc.strerror}); close unused channels, or raise the limit "
            f"(ulimit -n, or RLIMIT_NOFILE up to its hard limit)",
            endpoint=endpoint,
        )
    if code == errno.ENFILE:
        return ResourceExhausted(
            f"out of file descriptors while {doing} {endpoint}: the whole system's table is "
            f"full ({exc.strerror}); close unused channels, or raise fs.file-max (sysctl)",
            endpoint=endpoint,
        )
    if code == errno.ENOBUFS:
        return ResourceExhausted(
            f"the kernel is out of buffer memory while {doing} {endpoint} ({exc.strerror})",
            endpoint=endpoint,
        )
    if code == errno.ENOMEM:
        return ResourceExhausted(
            f"out of memory while {doing} {endpoint} ({exc.strerror}): the machine's, or this "
            f"process's address-space limit (RLIMIT_AS, ulimit -v); free memory, raise the "
            f"limit, or ask for less (a smaller capacity=, max_frame=)",
            endpoint=endpoint,
        )
    if code in _NO_ROOM:
        return ResourceExhausted(
            f"{_NO_ROOM[code]} while {doing} {endpoint} ({exc.strerror})", endpoint=endpoint
        )
    if code == errno.EROFS:
        return PermissionDenied(
            f"the file system is read-only while {doing} {endpoint} ({exc.strerror}); use a "
            f"directory on a writable one",
            endpoint=endpoint,
        )
    if code == errno.ECONNREFUSED:
        return ConnectionRefused(
            f"nothing is listening at {endpoint}: start the server first, or pass "
            f"reconnect=SECONDS to keep trying until it is up",
            endpoint=endpoint,
        )
    if code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(
            f"permission denied while {doing} {endpoint} ({exc.strerror})", endpoint=endpoint
        )
    if (
        code == errno.ETIMEDOUT
        and doing in _ESTABLISHED
        and (lost := gave_up(exc, endpoint, doing))
    ):
        return lost
    if code in (errno.ETIMEDOUT, errno.EAGAIN) or isinstance(exc, TimeoutError):
        return Timeout(f"timed out while {doing} {endpoint}", endpoint=endpoint)
    why = _BROKEN.get(code or 0, exc.strerror or str(exc))
    words = doing.split()
    # "sending" and "listening on" take the endpoint as their object ("... while sending
    # it"); "creating the spool" has one ("... broke while creating the spool it" before)
    it = " it" if len(words) == 1 or words[-1] in _PREPOSITIONS else ""
    return ChannelBroken(f"{endpoint} broke while {doing}{it}: {why}", endpoint=endpoint)


def accept_failed(exc: OSError, url: str) -> float:
    """Log that ``accept()`` on the listener at ``url`` failed with ``exc``; return how many
    seconds the listener should stop accepting: ``ACCEPT_RETRY`` when out of descriptors or
    memory (the client stays in the kernel's backlog and the socket readable, so retrying at
    once would spin and log without end; asyncio pauses the same way), else 0."""
    err = translate(exc, url, "accepting on")
    if exc.errno in OUT_OF_RESOURCES:
        logging.getLogger("ipcwire").warning("%s; accepting again in %g s", err, ACCEPT_RETRY)
        return ACCEPT_RETRY
    logging.getLogger("ipcwire").warning("%s", err)
    return 0.0


@contextlib.contextmanager
def translated(endpoint: str, doing: str) -> Iterator[None]:
    """Raise an OSError that leaves the block as its ipcwire error (``translate``, the
    OSError as the cause); ipcwire's own errors, OSErrors too, pass as they are. For
    ``connect()``/``listen()``: a driver that makes a socket or opens a file before its own
    translation (out of descriptors, say) still gives the typed error the API promises."""
    try:
        yield
    except IpcwireError:
        raise
    except OSError as exc:
        raise translate(exc, endpoint, doing) from exc
