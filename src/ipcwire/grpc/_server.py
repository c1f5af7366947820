"""What both gRPC listeners share: admitting a call (token, codec, limits), binding."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ipcwire._droplog import DropLog
from ipcwire._exposure import warn_if_exposed
from ipcwire.channel import PeerInfo, describe_peer
from ipcwire.errors import AddressInUse
from ipcwire.grpc._address import (
    GrpcAddress,
    forget_private,
    prepare_unix,
    probe_tcp,
    server_options,
)
from ipcwire.grpc._grpcio import grpc
from ipcwire.grpc._keepalive import Keepalive
from ipcwire.grpc._protocol import (
    BATCH_KEY,
    CALL,
    CODEC_KEY,
    MAX_FRAME_KEY,
    NONCE_KEY,
    PROOF_KEY,
    SERVICE,
    check_bearer,
    frame_limit,
    metadata_dict,
    proof,
    reads_batches,
    says_bye,
)
from ipcwire.grpc._tls import refused_files, server_credentials
from ipcwire.options import ChannelOptions
from ipcwire.unix._socket import remove_on_close, strict_umask

__all__ = ["Admission", "ServerCore", "bind_server", "handshake_ms", "warn_if_plaintext"]

# The error a refused client gets, by the status it is refused with (the words of the log).
_REFUSALS: Final = {
    "UNAUTHENTICATED": "AuthenticationFailed",
    "FAILED_PRECONDITION": "HandshakeError",
    "INVALID_ARGUMENT": "RemoteProtocolError",
}


@dataclass(frozen=True, slots=True)
class Admission:
    """A call let in (``send_limit``, the initial metadata to send) or refused (``error``)."""

    send_limit: int = 0
    initial: tuple[tuple[str, str], ...] = ()
    error: tuple[Any, str] | None = None
    # An ipcwire client's half-close closes the whole channel; a plain gRPC client's only
    # says "no more requests", and the server may still answer until it closes.
    ipcwire: bool = False
    batches: bool = False  # both sides read batches (see _protocol)
    bye: bool = False  # the client ends its stream with the goodbye (see _protocol)


class ServerCore:
    """The checks and settings of one gRPC listener (either API flavour)."""

    def __init__(
        self, options: ChannelOptions, *, reply_timeout: float, keepalive: Keepalive
    ) -> None:
        self.url = options.url
        self.codec = options.codec
        self.max_frame = options.max_frame
        self.token = options.token
        self.handshake_timeout = options.handshake_timeout
        self.reply_timeout = reply_timeout
        self.keepalive = keepalive
        self._droplog: DropLog | None = None  # refused clients (made with the final url)

    def admit(self, invocation_metadata: Any) -> Admission:
        """Check a new call's metadata: the token, the codec; learn the client's limit."""
        md = metadata_dict(invocation_metadata)
        if self.token is not None and not check_bearer(md.get("authorization"), self.token):
            return Admission(
                error=(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or wrong token: send 'authorization: Bearer <token>' metadata",
                )
            )
        codec = md.get(CODEC_KEY)
        if codec is not None and codec != self.codec.name:
            return Admission(
                error=(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the server uses codec={self.codec.name!r}, the client {codec!r}; use the "
                    f"same codec on both sides",
                )
            )
        limit = frame_limit(md.get(MAX_FRAME_KEY)) or self.max_frame
        initial = [(MAX_FRAME_KEY, str(self.max_frame))]
        batches = reads_batches(md)
        if batches:
            initial.append((BATCH_KEY, "1"))
        nonce = md.get(NONCE_KEY)
        if self.token is not None and nonce:
            try:
                initial.append((PROOF_KEY, proof(self.token, bytes.fromhex(nonce))))
            except ValueError:
                return Admission(error=(grpc.StatusCode.INVALID_ARGUMENT, "the nonce is not hex"))
        return Admission(
            limit,
            tuple(initial),
            ipcwire=codec is not None,
            batches=batches,
            bye=batches and says_bye(md),
        )

    def refused(self, context: Any, error: tuple[Any, str]) -> None:
        """Log a client that :meth:`admit` refused (``error``: its status and details) as
        the other listeners log theirs: a WARNING naming the listener, the client and why;
        bounded (a flood is counted in one line, see DropLog)."""
        if self._droplog is None:
            self._droplog = DropLog(self.url)
        code, details = error
        kind = _REFUSALS.get(getattr(code, "name", ""), str(code))
        who = describe_peer(self.peer(context))
        if not who or who.endswith(":"):  # grpc+unix: grpcio tells no pid, uid nor path
            who = "over the Unix socket; gRPC does not tell its pid"
        self._droplog.log(
            logging.WARNING, f"refused ({kind})", "%s refused a client (%s): %s: %s",
            self.url, who, kind, details,
        )  # fmt: skip

    def close_log(self) -> None:
        """The listener closes: write the count of refusals not logged one by one."""
        if self._droplog is not None:
            self._droplog.flush(final=True)

    def peer(self, context: Any) -> PeerInfo:
        """The caller's address, from grpcio's ``ipv4:host:port`` form."""
        text = str(context.peer() or "")
        kind, _, rest = text.partition(":")
        if kind in ("ipv4", "ipv6"):
            return PeerInfo(address=rest.replace("%5B", "[").replace("%5D", "]"))
        return PeerInfo(address=text or None)

    def reply_wait(self, time_remaining: float | None) -> float:
        """How long a unary call waits for the application's reply."""
        if time_remaining is None:
            return self.reply_timeout
        return max(min(time_remaining, 365 * 86400.0), 0.0)

    def server_options(self) -> list[tuple[str, Any]]:
        """The grpcio arguments of the listener: limits, pings, and the handshake's bound."""
        return [
            *server_options(self.max_frame),
            *self.keepalive.server_options(),
            ("grpc.server_handshake_timeout_ms", handshake_ms(self.handshake_timeout)),
        ]

    def handlers(self, stream: Callable[..., Any], call: Callable[..., Any]) -> Any:
        """The generic handler: bytes in, bytes out (identity serializers)."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Stream": grpc.stream_stream_rpc_method_handler(stream),
                CALL.rsplit("/", 1)[1]: grpc.unary_unary_rpc_method_handler(call),
            },
        )


def handshake_ms(seconds: float) -> int:
    """``handshake_timeout=`` as grpcio's ``grpc.server_handshake_timeout_ms``: a C int
    (grpcio refuses a larger one with OverflowError), so NO_LIMIT is about 24.8 days.

    grpcio closes a connection that has not finished its TLS handshake (grpcs://) and then
    sent the HTTP/2 preface and its first SETTINGS frame within that time of being accepted
    (measured, grpcio 1.85: nothing sent, 10 bytes of the preface, the whole preface without
    SETTINGS, a TLS client that says nothing: all closed at the deadline; without the option
    they stayed for grpcio's default, 120 s). A connection past that is an HTTP/2 connection
    and grpcio's keepalive pings look after it (see _keepalive)."""
    return min(max(round(seconds * 1000), 0), _INT_MAX)


_INT_MAX: Final = 2**31 - 1


def _add_port(server: Any, target: str, creds: Any, url: str, tls: dict[str, Any]) -> int:
    """The port bound (0: gRPC could not bind).

    Raises:
        ConfigurationError: the TLS files are why (gRPC says only that it failed).
    """
    try:
        if creds is not None:
            port = int(server.add_secure_port(target, creds))
        else:
            return int(server.add_insecure_port(target))
    except RuntimeError:
        port = 0
    if port == 0 and creds is not None:
        err = refused_files(url, **tls)
        if err is not None:
            raise err
    return port


def bind_server(
    server: Any, addr: GrpcAddress, url: str, tls: dict[str, Any], mode: int
) -> tuple[str, Callable[[], None]]:
    """Bind ``server`` (sync or asyncio) at ``addr``; return its real URL and a cleanup.

    Raises:
        AddressInUse, PermissionDenied, ConfigurationError, InvalidURL.
    """
    creds = server_credentials(url, tls=addr.scheme == "grpcs", **tls)
    secure = creds is not None
    if addr.path is not None:
        bind_path, place = prepare_unix(addr, url, mode)
        try:
            # bound in place (a path too long for a private name): 0600 until place() sets
            # its mode, as unix:// does
            in_place = bind_path == os.path.abspath(addr.path)
            with strict_umask() if in_place else contextlib.nullcontext():
                port = _add_port(server, f"unix:{bind_path}", creds, url, tls)
        except BaseException:
            forget_private(bind_path)
            raise
        if port == 0:
            forget_private(bind_path)
            raise AddressInUse(f"cannot listen at {url}: gRPC could not bind", endpoint=url)
        place()
        return addr.url(tls=secure), remove_on_close(addr.path)
    probe_tcp(addr, url)
    port = _add_port(server, addr.target(), creds, url, tls)
    if port == 0:
        raise AddressInUse(
            f"cannot listen at {url}: gRPC could not bind {addr.target()} (taken just now?)",
            endpoint=url,
        )
    return addr.url(tls=secure, port=port), lambda: None


def warn_if_plaintext(addr: GrpcAddress, url: str, token: bytes | None) -> None:
    """Log one warning when the listener at ``url`` (as :func:`bind_server` returned it)
    takes calls from other machines without TLS (its token, if it has one, is in every call's
    metadata)."""
    if addr.path is None:
        warn_if_exposed(
            url,
            addr.host,
            token=token,
            tls=url.startswith("grpcs://"),
            tls_fix="certfile=/keyfile= (TLS) with grpcs://",
            sent_in="in every call's authorization metadata",
        )
