"""A blocking D-Bus connection: a socket, SASL EXTERNAL, and one reader thread.

dbus-fast's own connections are asyncio (or GLib); the blocking driver uses its message
marshalling and unmarshalling with a plain socket instead, so the blocking API never runs an
event loop in a thread. The reader thread reads whole messages, hands replies to the callbacks
registered by serial, and passes calls and signals to the handlers (which must not block).
"""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast._private.address import parse_address
from dbus_fast._private.unmarshaller import Unmarshaller

from ipcwire._deadline import limit
from ipcwire._oserror import OUT_OF_RESOURCES, translate
from ipcwire._poll import wait_writable
from ipcwire.dbus._proto import HOW_TO_START, DbusError, bus_call, error_reply, user_refused
from ipcwire.dbus._state import not_read, part_written
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    IpcwireError,
    MechanismUnavailable,
    Timeout,
)

__all__ = ["BusConnection", "DbusError"]

log = logging.getLogger("ipcwire")

CLOSE_TIMEOUT = 2.0
SEND_TIMEOUT = 5.0  # how long a message sent without a time limit may wait for the daemon
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)
Handler = Callable[[Message], None]
ReplyCallback = Callable[[Message | None, IpcwireError | None], None]


def _connect_socket(address: str, timeout: float) -> socket.socket:
    errors = []
    for transport, opts in parse_address(address):
        try:
            if transport == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target = opts.get("path") or ("\0" + opts["abstract"] if "abstract" in opts else "")
                sock.settimeout(timeout)
                try:
                    sock.connect(target)
                except BaseException:
                    sock.close()
                    raise
                return sock
            if transport == "tcp":
                return socket.create_connection(
                    (opts.get("host", "127.0.0.1"), int(opts["port"])), timeout=timeout
                )
            errors.append(f"{transport}: transport not supported")
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES:
                # this process is out of descriptors: the daemon is not the problem
                raise translate(exc, address, "connecting to the D-Bus daemon at") from exc
            errors.append(f"{transport}:{opts}: {exc}")
    raise MechanismUnavailable(
        f"cannot reach the D-Bus daemon at {address} ({'; '.join(errors)}); is it running? "
        f"{HOW_TO_START}"
    )


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


class BusConnection:
    """One authenticated connection to a bus, with a reader thread."""

    def __init__(self, address: str, *, timeout: float = 10.0, label: str = "") -> None:
        self.address = address
        self.label = label or address
        self._sock = _connect_socket(address, timeout)
        self._write_lock = threading.Lock()
        self._serial_lock = threading.Lock()
        self._serial = 0
        self._replies: dict[int, ReplyCallback] = {}
        self._handlers: list[Handler] = []
        self._on_lost: list[Callable[[IpcwireError], None]] = []
        self.error: IpcwireError | None = None  # why the connection ended
        self.cut: IpcwireError | None = None  # a send was cut short: the connection with it
        self.closed = False
        # A forked child holds a copy of the socket: what it writes (a channel's Close, a
        # ReleaseName) or shuts down would reach the daemon as the parent's.
        self._owner = os.getpid()
        try:
            self._authenticate(timeout)
        except OSError as exc:
            self._sock.close()
            raise self._no_answer(exc, timeout) from exc
        except BaseException:
            self._sock.close()
            raise
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name="ipcwire dbus", daemon=True)
        self._reader.start()
        try:
            reply = self.call(bus_call("Hello"), timeout=timeout)
        except BaseException as exc:
            self._abort()  # nothing of ours to flush: end the reader thread now
            if isinstance(exc, IpcwireError):
                raise self._no_answer(exc, timeout) from exc
            raise
        self.unique_name: str = reply.body[0]

    def _no_answer(self, exc: Exception, timeout: float) -> IpcwireError:
        """What opening raises when the daemon failed to authenticate us or say hello (the
        asyncio driver's words)."""
        if isinstance(exc, (TimeoutError, Timeout)):
            return MechanismUnavailable(
                f"the D-Bus daemon at {self.address} did not answer within {timeout} s "
                f"({self.label})"
            )
        if isinstance(exc, ChannelBroken):  # authenticated, then dropped before Hello
            return user_refused(self.address, self.label)
        return MechanismUnavailable(
            f"cannot reach the D-Bus daemon at {self.address} ({exc}); is it running? "
            f"{HOW_TO_START}"
        )

    # -- setup ------------------------------------------------------------------------------
    def _authenticate(self, timeout: float) -> None:
        sock = self._sock
        uid = str(os.getuid()).encode().hex()
        sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = sock.recv(512)
            if not chunk:
                raise MechanismUnavailable(f"the D-Bus daemon at {self.address} hung up")
            line += chunk
            if len(line) > 4096:
                break
        if not line.startswith(b"OK "):
            raise MechanismUnavailable(
                f"the D-Bus daemon at {self.address} refused authentication as uid "
                f"{os.getuid()}: {line.decode(errors='replace').strip()}"
            )
        sock.sendall(b"BEGIN\r\n")

    # -- sending ----------------------------------------------------------------------------
    def next_serial(self) -> int:
        with self._serial_lock:
            self._serial += 1
            return self._serial

    def send(
        self, msg: Message, on_reply: ReplyCallback | None = None, *, timeout: float | None = None
    ) -> int:
        """Write one message; ``on_reply`` gets its reply (or the connection's error).

        Raises:
            ChannelBroken: the connection is gone.
            ChannelClosed: this connection was closed.
            Timeout: the daemon did not read it within ``timeout`` (when it read part of it,
                the connection is cut: it cannot carry anything more).
        """
        if (failed := self.error or self.cut) is not None:
            raise failed
        if os.getpid() != self._owner:
            raise ChannelBroken(
                f"the connection to {self.label} belongs to process {self._owner}, which "
                f"opened it; a forked child cannot use it: open a new one in the child",
                endpoint=self.label,
            )
        if not msg.serial:
            msg.serial = self.next_serial()
        data = msg._marshall(False)
        timeout = limit(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._write_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise self._not_read(0, len(data), timeout or 0.0)
        written = len(data)
        try:
            if on_reply is not None:
                self._replies[msg.serial] = on_reply
            if deadline is None:
                self._sock.sendall(data)
            else:
                written = self._write(data, deadline)
        except OSError as exc:
            self._replies.pop(msg.serial, None)
            err = (
                self.error
                or self.cut
                or ChannelBroken(
                    f"the connection to the D-Bus daemon broke: {exc}", endpoint=self.label
                )
            )
            raise err from exc
        finally:
            self._write_lock.release()
        if written < len(data):
            self._replies.pop(msg.serial, None)
            raise self._not_read(written, len(data), timeout or 0.0)
        return int(msg.serial)

    def _write(self, data: bytes | bytearray, deadline: float) -> int:
        """Write ``data`` until done or ``deadline``; how many bytes were written."""
        view = memoryview(data)
        written = 0
        while written < len(view):
            try:
                written += self._sock.send(view[written:], _DONTWAIT)
                continue
            except BlockingIOError:
                pass
            if not wait_writable(self._sock, deadline - time.monotonic()):
                break
        return written

    def _not_read(self, written: int, size: int, timeout: float) -> Timeout:
        """The Timeout of a send the daemon did not read in time; after part of a message,
        the connection is cut (the daemon cannot make sense of anything after it)."""
        if written:
            self.cut_off(part_written(timeout, written, size))
        return not_read(self.label, timeout, cut=bool(written))

    def call(self, msg: Message, *, timeout: float | None = 10.0) -> Message:
        """Send a method call and wait for its reply.

        Raises:
            DbusError: an error reply.
            Timeout: no reply in time.
            ChannelBroken: the connection broke.
        """
        done = threading.Event()
        box: list[Message | IpcwireError | None] = []

        def got(reply: Message | None, err: IpcwireError | None) -> None:
            box.append(err if err is not None else reply)
            done.set()

        serial = self.send(msg, got, timeout=timeout)
        if not done.wait(timeout):
            self._replies.pop(serial, None)
            raise Timeout(
                f"no reply to {msg.member} from {msg.destination} within {timeout} s",
                endpoint=self.label,
            )
        result = box[0]
        if isinstance(result, IpcwireError):
            raise result
        assert result is not None
        if result.message_type is MessageType.ERROR:
            raise error_reply(msg, result, self.label)
        return result

    def add_match(self, rule: str) -> None:
        """Subscribe to the signals a match rule selects."""
        self.call(bus_call("AddMatch", "s", [rule]))

    def remove_match(self, rule: str) -> None:
        """Drop a subscription, without waiting for the answer."""
        try:
            self.send(bus_call("RemoveMatch", "s", [rule]))
        except IpcwireError:
            pass

    def cut_off(self, why: str) -> None:
        """End the connection because the daemon stopped reading (``why``): the reader thread
        ends, and every user learns it from :meth:`on_lost`."""
        if self.cut is None:
            self.cut = ChannelBroken(f"{why}, so ipcwire cut the connection", endpoint=self.label)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- receiving --------------------------------------------------------------------------
    def add_handler(self, handler: Handler) -> None:
        """Called (in the reader thread) with every incoming method call and signal."""
        self._handlers.append(handler)

    def remove_handler(self, handler: Handler) -> None:
        try:
            self._handlers.remove(handler)
        except ValueError:
            pass

    def on_lost(self, callback: Callable[[IpcwireError], None]) -> None:
        """Called once, in the reader thread, when the connection ends."""
        self._on_lost.append(callback)

    def _read_loop(self) -> None:
        sock = self._sock
        err: IpcwireError
        try:
            while True:
                head = _recv_exact(sock, 16)
                endian = head[:1]
                fmt = "<" if endian == b"l" else ">"
                body_len, _serial, fields_len = struct.unpack(fmt + "III", head[4:16])
                header_end = 16 + fields_len + (-(16 + fields_len) % 8)
                rest = _recv_exact(sock, header_end - 16 + body_len)
                stream: Any = io.BytesIO(head + rest)
                msg = Unmarshaller(stream, negotiate_unix_fd=False).unmarshall()
                if msg is not None:
                    self._dispatch(msg)
        except (EOFError, OSError) as exc:
            if self.cut is not None:
                err = self.cut
            elif self.closed:
                err = ChannelClosed(f"{self.label} is closed", endpoint=self.label)
            else:
                err = ChannelBroken(
                    f"the D-Bus daemon closed the connection ({str(exc) or 'end of stream'})",
                    endpoint=self.label,
                )
        except Exception as exc:  # a malformed message: the stream is out of step
            log.exception("D-Bus reader failed")
            err = ChannelBroken(f"D-Bus protocol error: {exc}", endpoint=self.label)
        self.error = err
        for cb in list(self._replies.values()):
            cb(None, err)
        self._replies.clear()
        for lost in self._on_lost:
            try:
                lost(err)
            except Exception:
                log.exception("D-Bus on_lost callback failed")

    def _dispatch(self, msg: Message) -> None:
        kind = msg.message_type
        if kind is MessageType.METHOD_RETURN or kind is MessageType.ERROR:
            cb = self._replies.pop(msg.reply_serial, None)
            if cb is not None:
                cb(msg, None)
            return
        for handler in list(self._handlers):
            try:
                handler(msg)
            except Exception:
                log.exception("D-Bus message handler failed")

    # -- the end ----------------------------------------------------------------------------
    def _abort(self) -> None:
        """Hang up at once (a connection that never opened): the reader thread ends."""
        self.closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(timeout=CLOSE_TIMEOUT)
        self._sock.close()

    def close(self) -> None:
        """Disconnect (the bus then tells everyone this connection's name is gone).

        Graceful: stop writing, let the daemon read everything sent so far and hang up, then
        close. (Closing a socket with unread input makes the kernel reset the connection, and
        the daemon would then drop messages it had not read yet, a Close among them.)
        """
        if self.closed:
            return
        self.closed = True
        if os.getpid() != self._owner:  # a forked child's copy: the connection is the parent's
            self._sock.close()
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=CLOSE_TIMEOUT)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=CLOSE_TIMEOUT)
