"""UDP plumbing shared by the blocking and asyncio drivers.

* One message is one datagram. With ``framing="length"`` (default) the datagram is the
  encoded message itself (no prefix: the datagram keeps the boundary); with
  ``framing="ndjson"`` it is one JSON line (a datagram holding several lines, as ``nc -u``
  sends them, gives several messages).
* A message over the datagram limit (65507 bytes over IPv4, 65527 over IPv6, or ``max_frame``
  if smaller) is refused with ``FrameTooLarge`` before anything is sent, never truncated.
* A received datagram larger than ``max_frame`` is detected (``MSG_TRUNC`` gives its real
  size) and raised as ``FrameTooLarge``; the channel stays usable. With NDJSON ``max_frame``
  limits each line of a datagram, and a bad line is its error in its place.
* Binding defaults to loopback; ``udp://0.0.0.0:port`` is an explicit choice.
* Datagrams the kernel dropped because the receive buffer was full are counted (Linux: the
  socket's counter in /proc/net/udp, read when ``statistics()`` is asked for) in
  ``statistics().dropped``: loss is never silent where the OS tells. (Not ``SO_RXQ_OVFL``
  on each datagram: reading ancillary data made every receive a third slower.)
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ipcwire._core.codecs import BytesCodec, encoder_for
from ipcwire._core.framing import NdjsonDecoder
from ipcwire._core.url import Endpoint
from ipcwire._oserror import translate
from ipcwire._procfs import describe_pid, pids_for_inodes, udp_sockets
from ipcwire.errors import (
    AddressInUse,
    ConfigurationError,
    FrameTooLarge,
    InvalidURL,
    IpcwireError,
    LocalProtocolError,
    PermissionDenied,
    RemoteProtocolError,
)
from ipcwire.options import ChannelOptions
from ipcwire.tcp._socket import resolve as check_host  # (its host name check)

__all__ = [
    "DEFAULT_HOST",
    "MAX_DATAGRAM_V4",
    "MAX_DATAGRAM_V6",
    "READ_SIZE",
    "DatagramFormat",
    "UdpAddress",
    "bind_endpoint",
    "bind_socket",
    "connect_socket",
    "connected_pair",
    "proc_drops",
    "resolve",
]

DEFAULT_HOST: Final = "127.0.0.1"
MAX_DATAGRAM_V4: Final = 65507  # 65535 - 20 (IP header) - 8 (UDP header)
MAX_DATAGRAM_V6: Final = 65527  # 65535 - 8 (the IPv6 payload length excludes its header)
# What an asyncio endpoint reads at once: more than any datagram above, so none is cut and its
# real size is known; not asyncio's 256 KiB, which cost an mmap per datagram
# (ipcwire.aio._read_size). The bench's raw asyncio baseline reads as much.
READ_SIZE: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class UdpAddress:
    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp://{host}:{self.port}"


def resolve(endpoint: Endpoint, *, listening: bool) -> UdpAddress:
    """Host and port from ``udp://host:port`` (port 0: any free port, when binding).

    Raises:
        InvalidURL: no port, no host to send to, or a host that does not resolve.
    """
    if endpoint.port is None:
        raise InvalidURL(f"{endpoint.url} has no port: write udp://127.0.0.1:9000")
    host = endpoint.host
    if not host:
        if not listening:
            raise InvalidURL(f"{endpoint.url} has no host to send to")
        host = DEFAULT_HOST
    if not listening and endpoint.port == 0:
        raise InvalidURL(f"{endpoint.url}: port 0 cannot be sent to; name the peer's port")
    check_host(endpoint, listening=True)  # (a label over 63 characters: idna's UnicodeError)
    try:
        infos = socket.getaddrinfo(host, endpoint.port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise InvalidURL(f"cannot resolve the host of {endpoint.url}: {exc}") from exc
    return UdpAddress(str(infos[0][4][0]), endpoint.port)


def max_datagram(family: socket.AddressFamily) -> int:
    """The largest UDP payload for ``family``."""
    return MAX_DATAGRAM_V6 if family == socket.AF_INET6 else MAX_DATAGRAM_V4


def proc_drops(sock: socket.socket) -> int | None:
    """The kernel's drop counter for ``sock`` from /proc/net/udp (Linux), or None."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
        port = sock.getsockname()[1]
    except OSError:
        return None
    for entry in udp_sockets(port):
        if entry.inode == inode:
            return entry.drops
    return None


def bind_socket(addr: UdpAddress, url: str, *, reuse: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to ``addr``.

    Raises:
        AddressInUse: the port is taken (naming the holder when it can be seen).
        PermissionDenied: a port below 1024 without the privilege.
        InvalidURL: the host is not an address of this machine.
    """
    sock = socket.socket(addr.family, socket.SOCK_DGRAM)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((addr.host, addr.port))
        except OSError as exc:
            raise _bind_error(exc, addr, url) from exc
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_endpoint(endpoint: Endpoint, url: str) -> tuple[socket.socket, str]:
    """A socket bound at ``endpoint`` (loopback unless it names a host; ``url`` is named in
    the errors), and the URL where it is bound (the real port when the URL said 0).

    Raises:
        AddressInUse, PermissionDenied, InvalidURL.
    """
    sock = bind_socket(resolve(endpoint, listening=True), url)
    host, port = sock.getsockname()[:2]
    return sock, UdpAddress(host, port).url()


def connect_socket(sock: socket.socket, addr: UdpAddress, url: str) -> None:
    """Connect ``sock`` to the peer at ``addr``.

    Raises:
        PermissionDenied: a broadcast address (it needs SO_BROADCAST, which is not set).
        ChannelBroken: another OSError.
    """
    try:
        sock.connect((addr.host, addr.port))
    except OSError as exc:
        if exc.errno == errno.EACCES:  # what Linux says for a broadcast address
            raise PermissionDenied(
                f"cannot send to {url}: the OS refused ({exc.strerror}); a broadcast address "
                f"needs SO_BROADCAST, which ipcwire does not set: send to a unicast address",
                endpoint=url,
            ) from exc
        raise translate(exc, url, "connecting to") from exc


def connected_pair() -> list[tuple[socket.socket, UdpAddress]]:
    """Two sockets on free loopback ports, each connected to the other, with its peer."""
    socks = [bind_socket(UdpAddress("127.0.0.1", 0), "udp://127.0.0.1:0") for _ in range(2)]
    a, b = socks
    a.connect(b.getsockname())
    b.connect(a.getsockname())
    return [(s, UdpAddress(*s.getpeername()[:2])) for s in socks]


def _bind_error(exc: OSError, addr: UdpAddress, url: str) -> IpcwireError | OSError:
    if exc.errno == errno.EADDRINUSE:
        pids = pids_for_inodes({e.inode for e in udp_sockets(addr.port)})
        who = ", ".join(describe_pid(p) for p in pids) or "another process"
        return AddressInUse(
            f"cannot bind {url}: UDP port {addr.port} is in use by {who}; stop it, choose "
            f"another port, or use port 0 for any free one",
            pid=pids[0] if pids else None,
            endpoint=url,
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(
            f"cannot bind {url}: ports below 1024 need privileges; use a higher port",
            endpoint=url,
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return InvalidURL(f"cannot bind {url}: {addr.host} is not an address of this machine")
    return exc


class DatagramFormat:
    """Messages to datagrams and back, with the size rules in the module docstring."""

    def __init__(self, options: ChannelOptions, family: socket.AddressFamily) -> None:
        if options.token is not None:
            raise ConfigurationError(
                f"{options.url}: token= needs a handshake, which UDP (unreliable, "
                f"connectionless) cannot carry; use a stream mechanism (unix:, tcp:) for "
                f"authenticated channels, and never pickle over UDP"
            )
        self.url = options.url
        self.codec = options.codec
        self.ndjson = options.framing == "ndjson"
        self.max_frame = options.max_frame
        self.send_limit = min(options.max_frame, max_datagram(family) - (1 if self.ndjson else 0))
        # A datagram over recv_limit is refused whole. With NDJSON it holds lines (each at
        # most max_frame, without its newline, as NdjsonDecoder checks them), so any datagram.
        self.recv_limit = max_datagram(family) if self.ndjson else options.max_frame
        self.recv_size = min(self.recv_limit, max_datagram(family)) + 1
        self._encode = encoder_for(options.codec, options.url)
        # any raw-bytes codec, a subclass too: with NDJSON its encoded line (the subclass's
        # output included) is checked for a newline, which would split it (see pack)
        self._raw = isinstance(options.codec, BytesCodec)
        # ipcwire's own raw codec (not a subclass, which may encode or decode its own way):
        # bytes sent as they are (pack) and its decode, bytes(), called directly
        own = type(options.codec) is BytesCodec
        self.decode: Callable[[memoryview], Any] = bytes if own else options.codec.decode
        self._plain = own and not self.ndjson

    def pack(self, obj: Any) -> bytes | bytearray | memoryview:
        """One datagram for ``obj``.

        Raises:
            FrameTooLarge: over the datagram limit (nothing sent).
            LocalProtocolError: not encodable (or a newline in an NDJSON raw line).
        """
        payload = obj if self._plain and type(obj) is bytes else self._encode(obj)
        size = len(payload)
        if size > self.send_limit:
            raise FrameTooLarge(
                f"message of {size} bytes not sent to {self.url}: one UDP datagram carries at "
                f"most {self.send_limit} bytes here; split the message, or use a stream "
                f"mechanism (unix:, tcp:) for large messages",
                size=size,
                limit=self.send_limit,
                endpoint=self.url,
            )
        if not self.ndjson:
            return payload
        if self._raw and b"\n" in payload:
            raise LocalProtocolError(
                "a message sent with framing='ndjson' and codec='bytes' must not contain a newline"
            )
        return bytes(payload) + b"\n"

    def too_large(self, size: int, source: str) -> FrameTooLarge:
        """The error for a received datagram over ``max_frame``."""
        return FrameTooLarge(
            f"a datagram of {size} bytes from {source} is over the limit of {self.max_frame} "
            f"bytes; it was dropped (raise max_frame= if such messages are expected)",
            size=size,
            limit=self.max_frame,
            endpoint=self.url,
        )

    def bad(self, exc: Exception) -> IpcwireError:
        """The error for a datagram the codec failed on: its own typed error if it names the
        endpoint, else (a codec's error without one, or something other than an ipcwire
        error from a custom codec) RemoteProtocolError naming this endpoint; never an
        exception that escapes to another peer's caller."""
        if isinstance(exc, IpcwireError) and exc.endpoint is not None:
            return exc
        err = RemoteProtocolError(
            f"{self.url}: received a datagram that is not valid {self.codec.name} ({exc}); "
            f"it was dropped. Does the sender use the same codec?",
            endpoint=self.url,
        )
        err.__cause__ = exc
        return err

    def unpack(self, data: memoryview) -> list[Any]:
        """The messages in one received datagram (one, or one per line with NDJSON, where a
        line that is too long or undecodable is its error in its place: the other lines of
        the datagram are still delivered).

        Raises:
            RemoteProtocolError: undecodable (without NDJSON).
        """
        if not self.ndjson:
            try:
                return [self.decode(data)]
            except Exception as exc:
                raise self.bad(exc) from exc
        dec = NdjsonDecoder(self.max_frame, endpoint=self.url)
        dec.feed(data)
        if not data.nbytes or data[-1] != 10:
            dec.feed(b"\n")  # a last line without its newline is still a message
        out: list[Any] = []
        while True:
            try:
                frame = dec.next_frame()
                if frame is None:
                    return out
                out.append(self.decode(frame))
            except Exception as exc:
                out.append(self.bad(exc))
