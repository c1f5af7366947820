"""The socket under an asyncio transport, for closing it after its event loop has ended.

A channel or listener can outlive the loop that made it (returned from ``asyncio.run()``,
closed by an ``atexit`` hook); its ``close()`` then cannot use the loop, and asyncio's
transports have no public way to close without it. Every driver that closes without the loop
(the stream channels, http, sse) takes the socket from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any, cast

from ipcwire.errors import LocalProtocolError

__all__ = [
    "closable_socket",
    "close_transport",
    "drop_socket",
    "end_socket",
    "not_this_loop",
    "running_elsewhere",
]


def closable_socket(wrapper: Any) -> socket.socket | None:
    """A socket object to shut down and close, for a transport's ``get_extra_info("socket")``
    (asyncio's wrapper, uvloop's pseudo-socket, or a plain socket as anyio's Unix streams
    give): the wrapped socket itself when there is one (closing it closes the descriptor; a
    closed socket object closes nothing twice), else a duplicate (shutting it down ends the
    connection; the descriptor then goes with the transport). None when there is nothing
    left: no socket, or one its loop closed already (uvloop closes every handle it had)."""
    if wrapper is None:
        return None
    raw = wrapper if isinstance(wrapper, socket.socket) else getattr(wrapper, "_sock", None)
    if isinstance(raw, socket.socket):
        return raw if raw.fileno() != -1 else None  # (-1: closed already, as the loop ended)
    try:
        dup: socket.socket = wrapper.dup()
    except OSError:
        return None
    return dup


def drop_socket(wrapper: Any) -> None:
    """Shut down and close the socket under a transport, without its loop: the peer sees
    the end of the connection at once."""
    sock = closable_socket(wrapper)
    if sock is None:
        return
    with sock, contextlib.suppress(OSError):  # the peer is gone already
        sock.shutdown(socket.SHUT_RDWR)


def close_transport(t: asyncio.BaseTransport) -> None:
    """``t.close()``; when its loop has ended (the close cannot be scheduled: RuntimeError),
    its socket is closed here instead (a datagram socket has no connection to shut down)."""
    try:
        t.close()
    except RuntimeError:
        sock = closable_socket(t.get_extra_info("socket"))
        if sock is not None:
            sock.close()


def end_socket(t: asyncio.BaseTransport, last: Callable[[], bytes] | None = None) -> None:
    """Shut down and close the socket under the stream transport ``t`` without its loop;
    ``last()`` (a goodbye, a closing frame) is written first when it can go now: not on TLS
    (only the gone loop could write its records), not behind data ``t`` still holds, and only
    what the socket takes at once (a full buffer: the shutdown alone says the end)."""
    sock = closable_socket(t.get_extra_info("socket"))
    if sock is None:
        return
    write = cast(asyncio.WriteTransport, t)
    plain = t.get_extra_info("sslcontext") is None and not t.is_closing()
    with sock:
        sock.setblocking(False)
        if last is not None and plain and write.get_write_buffer_size() == 0:
            with contextlib.suppress(Exception):  # the peer, or the protocol, said no
                data = last()
                if data:
                    sock.send(data)
        with contextlib.suppress(OSError):  # the peer is gone already
            sock.shutdown(socket.SHUT_RDWR)


def running_elsewhere(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether ``loop`` runs, in another thread than this one (a ``close()`` from a thread
    of its own, say): what belongs to the loop (its transports, tasks, events and queues) is
    not thread-safe, so the close is handed to the loop (``call_soon_threadsafe``)."""
    if loop is None or loop.is_closed() or not loop.is_running():
        return False
    try:
        return asyncio.get_running_loop() is not loop
    except RuntimeError:  # no loop runs in this thread
        return True


def handed_to_loop(loop: asyncio.AbstractEventLoop | None, close: Callable[[], object]) -> bool:
    """``close()`` called in another thread than ``loop``'s, while it runs: ``close`` is
    handed to the loop (``call_soon_threadsafe``), and True is returned; the caller returns
    at once. Done in the calling thread, a close sets the futures a ``recv`` waits on and
    removes the loop's readers from there, which does not wake the loop (a waiting ``recv``
    slept on until its timeout) and which asyncio's debug mode refuses ("Non-thread-safe
    operation"). False (close here): the loop's own thread, no loop running, or the loop
    closed meanwhile."""
    if not running_elsewhere(loop):
        return False
    assert loop is not None
    try:
        loop.call_soon_threadsafe(close)
    except RuntimeError:  # the loop closed meanwhile: nothing waits in it any more
        return False
    return True


def not_this_loop(loop: asyncio.AbstractEventLoop, url: str) -> LocalProtocolError | None:
    """The error for a wait on a channel of ``loop`` from another loop (one ``asyncio.run()``
    made it, the next uses it): the wait would be on a future of a loop that never runs it
    again (asyncio's RuntimeError "attached to a different loop", or a hang)."""
    if asyncio.get_running_loop() is loop:
        return None
    return LocalProtocolError(
        f"{url} belongs to another event loop ({'ended' if loop.is_closed() else 'still open'}):"
        f" an asyncio channel is used only in the loop that opened it; open it again in this "
        f"one (a channel made in one asyncio.run() ends with it)",
        endpoint=url,
    )
