"""dbus-fast used directly, as the ``ipcwire bench`` baselines of D-Bus: ``raw/dbus`` and
``raw/dbus/asyncio`` (the ids ipcwire's dbus rows compare with).

Two connections to the same session bus as ipcwire's rows (``DBUS_SESSION_BUS_ADDRESS``, or
``$XDG_RUNTIME_DIR/bus``; without one the rows are a note, not a failure), talking to each
other's unique names with method calls, as a D-Bus programmer writes them by hand:

* round trip: side B calls ``Echo(ay)`` on side A, which answers with the same bytes: the
  D-Bus request/reply, two messages through the daemon (ipcwire's channel sends each way a
  ``Deliver`` call and acknowledges it: four messages, two on the critical path);
* throughput: side B calls ``Push(ay)``, side A answers each call with an empty reply as it
  reads it, and B keeps at most ``WINDOW`` calls unanswered (the bus has no other flow
  control: without it the daemon queues without bound). This is ipcwire's own flow control,
  so the ratio is what ipcwire's layer costs, not a different protocol.

dbus-fast has no blocking connection, so the blocking flavour is a plain socket with the
SASL EXTERNAL handshake and dbus-fast's marshalling (``Message._marshall``, ``Unmarshaller``);
the asyncio flavour is dbus-fast's ``MessageBus`` with a message handler, and the same
EAGAIN workaround ipcwire needs (dbus-fast disconnects on a full socket buffer otherwise).
Imported by the bench (listed in ``CONTENDER_MODULES``); registers its contenders.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import struct
from collections import deque
from typing import Any, Final

from dbus_fast import Message, MessageType
from dbus_fast._private.address import parse_address
from dbus_fast._private.unmarshaller import Unmarshaller

from ipcwire.bench.contender import Contender, Task, register_contender
from ipcwire.dbus._proto import MAX_MESSAGE, WINDOW, Target, bus_address
from ipcwire.errors import MechanismUnavailable

__all__ = ["CONTENDERS"]

INTERFACE: Final = "io.ipcwire.RawBench"
PATH: Final = "/io/ipcwire/RawBench"
_HEAD: Final = struct.Struct("<III")
_CALL: Final = MessageType.METHOD_CALL
_RETURN: Final = MessageType.METHOD_RETURN
_ERROR: Final = MessageType.ERROR


def _address() -> str:
    """The session bus ipcwire's rows use.

    Raises:
        MechanismUnavailable: there is none (a note in the report).
    """
    return bus_address(Target("session", "io.ipcwire.RawBench", PATH))


def _member(task: Task) -> str:
    return "Echo" if task.kind == "round_trip" else "Push"


def _call(dest: str, member: str, payload: bytes) -> Message:
    return Message(
        destination=dest,
        path=PATH,
        interface=INTERFACE,
        member=member,
        signature="ay",
        body=[payload],
    )


def _failed(msg: Message) -> ConnectionError:
    return ConnectionError(f"D-Bus error reply: {msg.error_name}: {msg.body}")


# -- blocking: a socket and dbus-fast's marshalling ----------------------------------------------
class _Wire:
    """One authenticated bus connection, read and written in the caller's thread."""

    def __init__(self, address: str) -> None:
        self._sock = self._connect(address)
        self._buf = bytearray()
        self._serial = 0
        self._sock.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        line = b""
        while b"\r\n" not in line:
            chunk = self._sock.recv(512)
            if not chunk:
                raise MechanismUnavailable(f"the D-Bus daemon at {address} hung up")
            line += chunk
        if not line.startswith(b"OK "):
            raise MechanismUnavailable(f"the D-Bus daemon at {address} refused: {line!r}")
        self._sock.sendall(b"BEGIN\r\n")
        self._sock.settimeout(None)
        self.write(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="Hello",
            )
        )
        while (reply := self.read()).message_type is not _RETURN:
            pass
        self.name: str = reply.body[0]

    @staticmethod
    def _connect(address: str) -> socket.socket:
        for transport, opts in parse_address(address):
            if transport != "unix":
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10.0)
            try:
                sock.connect(opts.get("path") or "\0" + opts.get("abstract", ""))
            except OSError as exc:
                sock.close()
                raise MechanismUnavailable(
                    f"the D-Bus daemon at {address} does not answer: {exc}"
                ) from exc
            return sock
        raise MechanismUnavailable(f"no unix transport in the D-Bus address {address}")

    def write(self, msg: Message) -> None:
        self._serial += 1
        msg.serial = self._serial
        self._sock.sendall(msg._marshall(False))

    def read(self) -> Message:
        """The next whole message from the bus."""
        buf = self._buf
        recv = self._sock.recv
        while True:
            if len(buf) >= 16:
                body_len, _, fields_len = _HEAD.unpack_from(buf, 4)  # little-endian peers
                total = 16 + fields_len + (-(16 + fields_len) % 8) + body_len
                if len(buf) >= total:
                    stream: Any = io.BytesIO(buf[:total])
                    del buf[:total]
                    msg = Unmarshaller(stream, negotiate_unix_fd=False).unmarshall()
                    if msg is not None:
                        return msg
                    continue
            chunk = recv(262144)
            if not chunk:
                raise EOFError("the D-Bus daemon closed the connection")
            buf += chunk

    def close(self) -> None:
        self._sock.close()


class _ServerLink:
    """Side A: answers ``Echo`` with the message, acknowledges each ``Push``."""

    def __init__(self, wire: _Wire) -> None:
        self._wire = wire
        self._call: Message | None = None

    def recv(self) -> bytes:
        read = self._wire.read
        while True:
            msg = read()
            if msg.message_type is _CALL and msg.interface == INTERFACE:
                if msg.member == "Push":
                    self._wire.write(Message.new_method_return(msg))
                else:
                    self._call = msg
                data: bytes = msg.body[0]
                return data
            if msg.message_type is _ERROR:
                raise _failed(msg)

    def send(self, message: bytes) -> None:
        assert self._call is not None
        self._wire.write(Message.new_method_return(self._call, "ay", [message]))

    def close(self) -> None:
        self._wire.close()


class _Acceptor:
    def __init__(self, wire: _Wire) -> None:
        self._wire = wire
        self.address = wire.name

    def accept(self) -> _ServerLink:
        return _ServerLink(self._wire)

    def close(self) -> None:
        self._wire.close()


def side_a(task: Task, shared: object) -> _Acceptor:
    return _Acceptor(_Wire(_address()))


class _ClientLink:
    """Side B: ``Echo`` calls and their replies, or ``Push`` calls within the window."""

    def __init__(self, wire: _Wire, peer: str, member: str) -> None:
        self._wire = wire
        self._peer = peer
        self._member = member
        self._inflight = 0

    def send(self, message: bytes) -> None:
        while self._inflight >= WINDOW:
            self._take_reply()
        self._wire.write(_call(self._peer, self._member, message))
        self._inflight += 1

    def _take_reply(self) -> Message:
        while True:
            msg = self._wire.read()
            if msg.message_type is _RETURN:
                self._inflight -= 1
                return msg
            if msg.message_type is _ERROR:
                raise _failed(msg)

    def recv(self) -> bytes:
        while True:
            msg = self._take_reply()
            if msg.body:
                data: bytes = msg.body[0]
                return data

    def close(self) -> None:
        self._wire.close()


def side_b(task: Task, address: str, shared: object) -> _ClientLink:
    return _ClientLink(_Wire(_address()), address, _member(task))


# -- asyncio: dbus-fast's MessageBus -----------------------------------------------------------
async def _bus() -> Any:
    from dbus_fast.aio import MessageBus

    from ipcwire.dbus._aio_conn import _EagainIsNotFatal

    address = _address()
    bus = MessageBus(bus_address=address, negotiate_unix_fd=False)
    try:
        await asyncio.wait_for(bus.connect(), 10)
    except (OSError, TimeoutError) as exc:
        raise MechanismUnavailable(f"the D-Bus daemon at {address} does not answer: {exc}") from exc
    writer = getattr(bus, "_writer", None)
    if writer is not None and hasattr(writer, "sock"):
        writer.sock = _EagainIsNotFatal(writer.sock)
    return bus


class _AioLink:
    """Either side, on a ``MessageBus``: its handler queues what this side reads."""

    def __init__(self, bus: Any, peer: str | None, member: str | None) -> None:
        self._bus = bus
        self._send = bus.send
        self._peer = peer
        self._member = member
        self._queue: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._window: asyncio.Future[None] | None = None
        self._inflight = 0
        self._call: Message | None = None
        self._loop = asyncio.get_running_loop()
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> bool:
        kind = msg.message_type
        if kind is _CALL:
            if msg.interface != INTERFACE:
                return False
        elif kind is _RETURN or kind is _ERROR:
            if self._peer is None or msg.sender != self._peer:
                return False
            self._inflight -= 1
            w = self._window
            if w is not None and not w.done():
                w.set_result(None)
            if kind is _RETURN and not msg.body:
                return True  # an acknowledgement
        else:
            return False
        self._queue.append(msg)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        return True

    async def recv(self) -> bytes:
        q = self._queue
        while not q:
            self._waiter = self._loop.create_future()
            await self._waiter
        msg = q.popleft()
        if msg.message_type is _ERROR:
            raise _failed(msg)
        if msg.message_type is _CALL:
            if msg.member == "Push":  # acknowledged as it is read
                self._send(Message.new_method_return(msg))
            else:
                self._call = msg
        data: bytes = msg.body[0]
        return data

    async def send(self, message: bytes) -> None:
        if self._peer is None:  # side A: the answer to the call just read
            assert self._call is not None
            self._send(Message.new_method_return(self._call, "ay", [message]))
            return
        while self._inflight >= WINDOW:
            self._window = self._loop.create_future()
            await self._window
        assert self._member is not None
        self._send(_call(self._peer, self._member, message))
        self._inflight += 1

    async def aclose(self) -> None:
        self._bus.disconnect()
        with contextlib.suppress(Exception):  # gone either way
            await asyncio.wait_for(self._bus.wait_for_disconnect(), 5)


class _AioAcceptor:
    def __init__(self, bus: Any) -> None:
        self._bus = bus
        self.address: str = bus.unique_name

    async def accept(self) -> _AioLink:
        return _AioLink(self._bus, None, None)

    async def aclose(self) -> None:
        self._bus.disconnect()


async def aio_side_a(task: Task, shared: object) -> _AioAcceptor:
    return _AioAcceptor(await _bus())


async def aio_side_b(task: Task, address: str, shared: object) -> _AioLink:
    return _AioLink(await _bus(), address, _member(task))


def _contender(api: str) -> Contender:
    aio = api == "asyncio"
    return Contender(
        id="raw/dbus" + ("/asyncio" if aio else ""),
        title="dbus-fast method calls" + (", asyncio" if aio else ""),
        group="baseline",
        mechanism="dbus",
        api="asyncio" if aio else "blocking",
        side_a=aio_side_a if aio else side_a,
        side_b=aio_side_b if aio else side_b,
        framing="D-Bus method call (header + ay body)",
        overhead=None,
        max_size=MAX_MESSAGE,
        requires=("dbus_fast",),
        note=(
            f"dbus-fast's MessageBus: Echo call/reply; Push calls acknowledged, window {WINDOW}"
            if aio
            else "a socket with dbus-fast's marshalling: Echo call/reply; Push calls "
            f"acknowledged, window {WINDOW}"
        ),
    )


CONTENDERS: Final = (_contender("blocking"), _contender("asyncio"))
for _c in CONTENDERS:
    register_contender(_c)
