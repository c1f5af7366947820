"""Where a gRPC endpoint is, how to bind it safely, and its TLS credentials.

grpcio binds by address string and, left alone, would take over a port another server holds
(SO_REUSEPORT) or unlink a live Unix socket. So ipcwire turns SO_REUSEPORT off, probes a
requested TCP port first (``AddressInUse`` names the holder), and for ``grpc+unix`` refuses
a path a live process listens on, removes stale files, and binds inside a private 0700
directory before hard-linking the socket into place with its mode (0600 by default), as the
``unix`` mechanism does.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._stream.retry import MAX_DELAY
from ipcwire.errors import AddressInUse, ConfigurationError, InvalidURL
from ipcwire.options import unix_only
from ipcwire.tcp._socket import TcpAddress
from ipcwire.tcp._socket import bind_listener as bind_tcp
from ipcwire.tcp._socket import resolve as check_host
from ipcwire.unix._socket import UnixAddress, check_listen_path, is_backlog_full
from ipcwire.unix._socket import resolve as resolve_unix

__all__ = ["GrpcAddress", "channel_options", "file_mode", "resolve", "server_options"]

_INT32_MAX: Final = 2**31 - 1
_MAX_PATH: Final = 107  # sizeof(sun_path) - 1 on Linux
MAX_RECONNECT_MS: Final = int(MAX_DELAY * 1000)  # grpcio's longest wait between reconnects
_UNCONNECTED_WRITE: Final = re.compile(rf"sendmsg: [^()]*\({errno.ENOTCONN}\)")


@dataclass(frozen=True, slots=True)
class GrpcAddress:
    """A parsed gRPC endpoint."""

    scheme: str  # grpc, grpcs or grpc+unix
    host: str
    port: int
    path: str | None  # the socket file, for grpc+unix

    def target(self, port: int | None = None) -> str:
        """The address string grpcio understands: an internationalised host name in its
        ASCII form (``bücher.example`` as ``xn--bcher-kva.example``), as Python's socket
        module gives it to getaddrinfo for tcp:// (grpcio's resolver takes ASCII only:
        "Misformatted domain name")."""
        if self.path is not None:
            return f"unix:{os.path.abspath(self.path)}"
        return f"{_bracketed(ascii_host(self.host))}:{self.port if port is None else port}"

    def url(self, *, tls: bool = False, port: int | None = None) -> str:
        if self.path is not None:
            return f"grpc+unix://{os.path.abspath(self.path)}"
        where = f"{_bracketed(self.host)}:{self.port if port is None else port}"
        return f"{'grpcs' if tls else 'grpc'}://{where}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def ascii_host(host: str) -> str:
    """``host`` as getaddrinfo gets it from Python's socket module for tcp:// (the ``idna``
    codec: IDNA 2003, Nameprep); ASCII hosts and IP addresses unchanged. ``resolve`` checked
    that it encodes."""
    return host if host.isascii() else host.encode("idna").decode("ascii")


def resolve(endpoint: Endpoint, *, listening: bool) -> GrpcAddress:
    """Parse ``grpc://host:port``, ``grpcs://host:port`` or ``grpc+unix:///path``.

    Raises:
        InvalidURL: no port, no host to connect to, an abstract name, or a bad path.
    """
    if endpoint.scheme == "grpc+unix":
        addr = resolve_unix(endpoint)
        if addr.path is None:
            raise InvalidURL(
                f"{endpoint.url}: gRPC over an abstract Unix name has no access control "
                f"(no file mode, and gRPC cannot check peer credentials); use a socket path",
                endpoint=endpoint.url,
            )
        return GrpcAddress(endpoint.scheme, "", 0, addr.path)
    if endpoint.port is None:
        raise InvalidURL(
            f"{endpoint.url} has no port: write {endpoint.scheme}://127.0.0.1:50051 (port 0 to "
            f"listen on any free port)",
            endpoint=endpoint.url,
        )
    host = endpoint.host
    if not host:
        if not listening:
            raise InvalidURL(f"{endpoint.url} has no host to connect to", endpoint=endpoint.url)
        host = "127.0.0.1"
    # tcp's host check (an empty or over-long label, a name the idna codec cannot encode)
    check_host(replace(endpoint, host=host), listening=True)
    return GrpcAddress(endpoint.scheme, host, endpoint.port, None)


def file_mode(addr: GrpcAddress, url: str, mode: int | None) -> int:
    """The mode a listener gives its socket file: ``mode`` (``None``: 0600).

    Raises:
        ConfigurationError: ``mode=`` on TCP (``grpc://``, ``grpcs://``), which has no socket
            file: it was accepted and ignored.
    """
    if addr.path is None:
        unix_only(url, "grpc+unix", mode=mode)
    return 0o600 if mode is None else mode


def _limit(max_frame: int) -> int:
    return min(max_frame, _INT32_MAX)


def channel_options(max_frame: int, server_hostname: str | None) -> list[tuple[str, Any]]:
    """Client options: receive up to ``max_frame``; sends are checked against the server's
    advertised limit by ipcwire itself (FrameTooLarge before anything is written)."""
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", _limit(max_frame)),
        ("grpc.max_send_message_length", -1),
        ("grpc.enable_retries", 0),
        # grpcio waits up to 120 s between attempts to reconnect (1.6 times longer each
        # time): a unary client whose server was down a while failed for that long after the
        # server came back. ipcwire's own retries wait at most 1 s (_stream/retry.py).
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_MS),
    ]
    if server_hostname:
        opts.append(("grpc.ssl_target_name_override", server_hostname))
    return opts


def server_options(max_frame: int) -> list[tuple[str, Any]]:
    """Server options: the same limits, and no SO_REUSEPORT (no silent port sharing)."""
    return [
        ("grpc.max_receive_message_length", _limit(max_frame)),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),
    ]


def probe_tcp(addr: GrpcAddress, url: str) -> None:
    """Raise the helpful error if the requested port is taken (port 0 is always free).

    Raises:
        AddressInUse, PermissionDenied, InvalidURL.
    """
    if addr.port != 0:
        bind_tcp(TcpAddress(addr.host, addr.port), url, 1).close()


def prepare_unix(addr: GrpcAddress, url: str, mode: int) -> tuple[str, Callable[[], None]]:
    """Check the socket path; return the private path grpcio should bind, and ``place()``
    which gives that socket its mode and links it to the real path.

    Raises:
        AddressInUse: a live process listens at the path, or it is not a socket.
        PermissionDenied, ConfigurationError: the directory is missing or not writable.
    """
    assert addr.path is not None
    path = os.path.abspath(addr.path)
    parent = os.path.dirname(path)
    check_listen_path(UnixAddress(path, None), url)  # as unix://: stale files, live owners
    private = tempfile.mkdtemp(prefix=".iw", dir=parent)
    tmp = os.path.join(private, "s")
    if len(os.fsencode(tmp)) > _MAX_PATH:
        os.rmdir(private)
        return path, lambda: os.chmod(path, mode)

    def place() -> None:
        try:
            os.chmod(tmp, mode)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise AddressInUse(
                    f"cannot listen at {url}: another process created {path} just now",
                    endpoint=url,
                ) from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            os.rmdir(private)

    return tmp, place


def forget_private(bind_path: str) -> None:
    """Remove the private directory of a bind that failed."""
    parent = Path(bind_path).parent
    if parent.name.startswith(".iw"):
        for p in (Path(bind_path), parent):
            try:
                p.unlink() if p.is_file() or p.is_socket() else p.rmdir()
            except OSError:
                pass


def read_pem(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    """A PEM file's bytes (None for None).

    Raises:
        ConfigurationError: the file cannot be read.
    """
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} {path}: {exc.strerror}") from None


def backlog_is_full(addr: GrpcAddress, refused: BaseException | None = None) -> bool:
    """Whether a ``grpc+unix`` listener is there but its backlog is full (never blocks);
    with ``refused``, grpcio's refusal of a connect: also whether that connect met the full
    backlog and the server has made room since.

    grpcio connects its own sockets and takes the EAGAIN of a full backlog for a connect in
    progress, then fails it ("Transport endpoint is not connected"), which reads as nothing
    listening. One non-blocking connect of our own tells a busy server from none (one that
    succeeds is closed at once: the server sees a connection end before its first byte).
    That probe comes after grpcio's attempt: a server that accepted in between lets it in,
    and then only grpcio's words tell that its attempt found the backlog full (read as
    nothing listening, the client gave up just as the server made room for it)."""
    if addr.path is None:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(addr.path)
    except OSError as exc:
        return is_backlog_full(exc)
    finally:
        probe.close()
    return refused is not None and _never_connected(refused)


def _never_connected(refused: BaseException) -> bool:
    """Whether grpcio's refusal is of a connect that never completed: on a Unix socket, one
    that met a full backlog (the only EAGAIN a unix connect() gives): grpcio writes first,
    and its write fails with ENOTCONN ("sendmsg: Transport endpoint is not connected (107)",
    the words in the locale's language, the number not)."""
    return _UNCONNECTED_WRITE.search(str(refused)) is not None
