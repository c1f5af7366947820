"""ipcwire's gRPC service, without I/O: method names, metadata, and status codes to errors.

The service is generic: messages are opaque bytes (the channel's codec encodes them), so no
``.proto`` file and no generated code are needed, in Python or elsewhere::

    service Channel {                       // package ipcwire
      rpc Stream(stream Bytes) returns (stream Bytes);   // one ipcwire channel
      rpc Call(Bytes) returns (Bytes);                   // one request, one reply
    }

Request metadata: ``authorization: Bearer <token>``, ``ipcwire-codec``,
``ipcwire-max-frame`` (the largest message the client accepts), ``ipcwire-nonce`` (hex; the
server answers with ``ipcwire-proof`` = HMAC-SHA256 over it, so the client knows the server
has the token too), ``ipcwire-batch: 1`` (the client reads batches). Initial response
metadata: ``ipcwire-max-frame``, ``ipcwire-proof``, and ``ipcwire-batch: 1`` when the server
reads batches too.

**Batches** (only between two sides that both said ``ipcwire-batch: 1``): a stream message
that begins with :data:`BATCH_MARKER` carries several ipcwire messages, each as a 4-byte
little-endian length and its bytes. A sender packs what is already queued (never waits to fill
one), so a writer ahead of gRPC sends one gRPC message for many small ones. A single message
that happens to begin with the marker travels as a batch of one.

**Goodbye** (a client that said ``ipcwire-bye: 1``, to a server that reads batches): the
client's last stream message before it half-closes is :data:`BYE`, an empty batch. gRPC ends
a request stream the same way when the client closes it and when its process or connection
dies (the cancellation comes only later, if at all), so the server tells a close from a loss
by the goodbye: a stream that ends without it is ``ChannelBroken``.

**Failure** (docs/errors.md, "Finished, or failed?"): a client whose ``with`` block was left
by an exception sends :func:`failed_bye` instead of :data:`BYE`: the batch marker, the
length ``0xFFFFFFFF`` (little-endian) and a UTF-8 reason naming the exception's type; the
server's channel then ends with ``ChannelBroken`` naming it. A server whose ``with`` block or
handler failed ends the RPC with status ``INTERNAL`` and details beginning with
:data:`FAILED_DETAILS` and the reason; the client's channel ends the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from ipcwire._core.ending import failed_error
from ipcwire._core.framing import MAX_REASON, readable_reason
from ipcwire._core.handshake import same_secret
from ipcwire._oserror import UNREACHABLE, unreachable
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    HandshakeError,
    IpcwireError,
    PermissionDenied,
    RemoteProtocolError,
    ResourceExhausted,
    Timeout,
)

if TYPE_CHECKING:
    from ipcwire.options import ChannelOptions

__all__ = [
    "BATCH_BYTES",
    "BATCH_MARKER",
    "BYE",
    "CALL",
    "FAILED_DETAILS",
    "MARKER_BYTE",
    "SERVICE",
    "STREAM",
    "check_bearer",
    "check_welcome",
    "client_metadata",
    "connect_timed_out",
    "error_from_status",
    "failed_bye",
    "failure_details",
    "frame_limit",
    "lost_client",
    "marker_check",
    "metadata_dict",
    "pack_batch",
    "plan_batches",
    "proof",
    "reads_batches",
    "says_bye",
    "unary_doing",
    "unpack_batch",
    "unreachable_os_error",
]

SERVICE: Final = "ipcwire.Channel"
STREAM: Final = f"/{SERVICE}/Stream"
CALL: Final = f"/{SERVICE}/Call"
CODEC_KEY: Final = "ipcwire-codec"
MAX_FRAME_KEY: Final = "ipcwire-max-frame"
NONCE_KEY: Final = "ipcwire-nonce"
PROOF_KEY: Final = "ipcwire-proof"
NO_REPLY_KEY: Final = "ipcwire-no-reply"
BATCH_KEY: Final = "ipcwire-batch"
BYE_KEY: Final = "ipcwire-bye"
# 0xC1 begins no msgpack, JSON or pickle message, so only a raw message can look like a batch.
BATCH_MARKER: Final = b"\xc1ipcwB\x00\x01"
# Its first byte, looked at before the whole marker on every message (bytes.startswith
# parses its arguments at each call: about twice the cost of a slice and a compare).
MARKER_BYTE: Final = BATCH_MARKER[:1]
BATCH_OVERHEAD: Final = len(BATCH_MARKER) + 4  # a batch of one message
BYE: Final = BATCH_MARKER  # an empty batch: the client's last message (see the docstring)
_FAILED: Final = 0xFFFFFFFF  # the length after the marker that makes a goodbye a failure's
FAILED_DETAILS: Final = "ipcwire: the channel ended after an error: "
# A sender packs queued messages into one gRPC message of at most this many bytes (or the
# peer's limit, if smaller), and at most BATCH_MESSAGES of them.
BATCH_BYTES: Final = 256 * 1024
BATCH_MESSAGES: Final = 1024

_SIZES: Final = re.compile(r"\((\d+) vs\.? (\d+)\)")


def metadata_dict(md: Iterable[Any] | None) -> dict[str, str]:
    """gRPC metadata (pairs or Metadatum tuples) as a dict of text values."""
    out: dict[str, str] = {}
    for key, value in md or ():
        out[str(key).lower()] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return out


def bearer(token: bytes, endpoint: str) -> str:
    """The ``authorization`` metadata value for ``token``.

    Raises:
        ConfigurationError: the token is not printable ASCII.
    """
    text = token.decode("ascii", "replace")
    if not text.isprintable() or " " in text or "\ufffd" in text:
        raise ConfigurationError(
            f"the token for {endpoint} must be printable ASCII without spaces: gRPC sends it "
            f"as 'authorization: Bearer <token>' metadata",
            endpoint=endpoint,
        )
    return f"Bearer {text}"


def check_bearer(value: str | None, token: bytes) -> bool:
    """Whether an ``authorization`` value carries ``token`` (constant-time comparison)."""
    if not value:
        return False
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(rest.strip().encode("latin-1", "replace"), token)


def proof(token: bytes, nonce: bytes) -> str:
    """The server's proof that it knows the token."""
    return hmac.new(token, b"ipcwire-grpc-server\0" + nonce, hashlib.sha256).hexdigest()


def error_from_status(
    code: Any, details: str | None, endpoint: str, *, doing: str, sent: int = 0
) -> IpcwireError:
    """The typed error for a gRPC status (``code`` is a ``grpc.StatusCode``).

    ``doing`` is "connecting", "sending", "receiving" or "requesting"; an OK status while
    receiving is the peer's clean close.
    """
    name = getattr(code, "name", str(code))
    text = details or name
    said = f"{endpoint} answered {name}: {text}"
    if name == "OK":
        return EndOfChannel(f"{endpoint} closed the channel", endpoint=endpoint)
    if name == "INTERNAL" and text.startswith(FAILED_DETAILS):
        return failed_error(endpoint, text[len(FAILED_DETAILS) :], endpoint)
    if name == "UNAUTHENTICATED":
        return AuthenticationFailed(said, endpoint=endpoint)
    if name == "PERMISSION_DENIED":
        return PermissionDenied(said, endpoint=endpoint)
    if name == "DEADLINE_EXCEEDED":
        return Timeout(f"{endpoint}: the deadline passed while {doing} ({text})", endpoint=endpoint)
    if name == "RESOURCE_EXHAUSTED":
        m = _SIZES.search(text)
        if m is not None or "larger than max" in text:
            size, limit = (int(m.group(1)), int(m.group(2))) if m else (sent, max(sent - 1, 0))
            return FrameTooLarge(said, size=size, limit=limit, endpoint=endpoint)
        if "concurrent rpc limit" in text.lower():  # gRPC's maximum_concurrent_rpcs
            return ResourceExhausted(
                f"{said}: the listener has as many channels open as it serves at once (its "
                f"max_channels=, 64 by default); try again once others closed, or listen with "
                f"a larger max_channels=",
                endpoint=endpoint,
            )
        return ResourceExhausted(said, endpoint=endpoint)
    if name == "UNAVAILABLE":
        low = text.lower()
        if "security handshaker" in low:  # grpc could not load this side's TLS files
            return ConfigurationError(
                f"gRPC could not set up TLS to {endpoint} with the files given: cafile= must "
                f"hold PEM CA certificates, certfile= a PEM certificate and keyfile= its "
                f"private key (PEM, not encrypted) ({text})",
                endpoint=endpoint,
            )
        if "certificate_verify_failed" in low or "handshake failed" in low:
            return AuthenticationFailed(
                f"TLS with {endpoint} failed: its certificate is not trusted here, or it does "
                f"not trust ours; pass cafile= (the CA that signed the server's certificate) "
                f"({text})",
                endpoint=endpoint,
            )
        if "hostname verification" in low:
            return AuthenticationFailed(
                f"TLS with {endpoint} failed: the server's certificate does not name the host "
                f"connected to; pass server_hostname= with a name the certificate has ({text})",
                endpoint=endpoint,
            )
        # grpcio's words for a connection it could not make (not one lost mid-call, which
        # is "Stream removed (Socket closed)" and the like)
        unmade = doing == "connecting" and "failed to connect" in low
        if unmade and "permission denied" in low:
            return PermissionDenied(
                f"permission denied connecting to {endpoint}: this user may not open the "
                f"socket file (or a directory on the way); run as its owner, or have the "
                f"server listen with mode=0o660 and a group you share ({text})",
                endpoint=endpoint,
            )
        if unmade and ("failed parsing http/2" in low or "http1.x server" in low):
            # Something listens and answered, but not in HTTP/2: grpcio's words came only at
            # the end of "nothing is listening ... start the server first" before.
            what = "HTTP/1.x" if "http1.x server" in low else "something that is not HTTP/2"
            return RemoteProtocolError(
                f"something is listening at {endpoint}, but it does not speak gRPC (HTTP/2): "
                f"it answered in {what} (an http://, ws:// or sse+http:// server?); check the "
                f"port, and that the URL's scheme is the server's ({text})",
                endpoint=endpoint,
            )
        if unmade and "reset by peer" in low and not endpoint.startswith("grpcs:"):
            # Reset before gRPC could talk: a server going away (still a refusal: reconnect=
            # tries again), or one that does not speak gRPC (Python's TLS server resets).
            unix = endpoint.startswith("grpc+unix:")
            return ConnectionRefused(
                f"{endpoint} reset the connection before gRPC could talk: the server went "
                f"away meanwhile (start it, or pass reconnect=SECONDS to keep trying), or what "
                f"listens there does not speak gRPC (HTTP/2): check that the URL's scheme is "
                f"the server's"
                + ("" if unix else "; if it serves TLS, connect to grpcs:// with cafile=")
                + f" ({text})",
                endpoint=endpoint,
            )
        if unmade and "socket closed" in low:
            # Something answered, then hung up before gRPC could talk: no refusal.
            if endpoint.startswith("grpcs:"):
                return AuthenticationFailed(
                    f"{endpoint} closed the connection during the TLS handshake: it did not "
                    f"accept our certificate (it asks for one signed by a CA it trusts: pass "
                    f"certfile= and keyfile=) ({text})",
                    endpoint=endpoint,
                )
            return not_grpc(endpoint, text)
        lost = unreachable_os_error(text) if doing == "connecting" else None
        if lost is not None:  # tcp://'s words; connect() retries it under reconnect=
            err = unreachable(lost, endpoint, reconnect=None, detail=text)
            err.__cause__ = lost
            return err
        if doing == "connecting" and (
            "refused" in low or "failed to connect" in low or "no such file" in low
        ):
            return ConnectionRefused(
                f"nothing is listening at {endpoint}: start the server first, or pass "
                f"reconnect=SECONDS to keep trying ({text})",
                endpoint=endpoint,
            )
        if "ping timeout" in low or "keepalive" in low:
            return ChannelBroken(
                f"{endpoint} did not answer a keepalive ping in time: the peer is dead, frozen "
                f"or unreachable (raise keepalive_timeout= if it is just slow) ({text})",
                endpoint=endpoint,
            )
        return ChannelBroken(said, endpoint=endpoint)
    if name == "FAILED_PRECONDITION":
        return HandshakeError(said, endpoint=endpoint)
    if name in ("INVALID_ARGUMENT", "UNIMPLEMENTED", "OUT_OF_RANGE"):
        hint = "" if name != "UNIMPLEMENTED" else "; is it an ipcwire gRPC endpoint?"
        return RemoteProtocolError(said + hint, endpoint=endpoint)
    return ChannelBroken(said, endpoint=endpoint)


def unreachable_os_error(details: str) -> OSError | None:
    """The OSError that grpcio's status ``details`` report for a connect that found no way
    to the host ("No route to host", "Network is unreachable"), or None."""
    low = details.lower()
    for code in sorted(UNREACHABLE):
        if os.strerror(code).lower() in low:
            return OSError(code, os.strerror(code))
    return None


def connect_timed_out(endpoint: str, limit: float, reconnect: float | None) -> Timeout:
    """A gRPC connect attempt that got no answer (no headers) within ``limit`` seconds."""
    retry = (
        f" (reconnect={reconnect} retries attempts that are refused or find no route, not one "
        f"that gets no answer: raise timeout= too)"
        if reconnect
        else ""
    )
    return Timeout(
        f"{endpoint} did not answer within the connect timeout ({limit} s: timeout=, the "
        f"limit of each attempt): the host is down, the network to it drops the packets (a "
        f"partition, a firewall), or the server is stuck; check the address and the route, "
        f"or pass a larger timeout= to wait longer{retry}",
        endpoint=endpoint,
    )


def not_grpc(endpoint: str, text: str) -> ChannelBroken:
    """Something accepted the connection to ``endpoint`` and closed it before gRPC could
    talk (grpcio's "Socket closed" while connecting): it does not speak gRPC (HTTP/2): an
    ipcwire tcp://, unix:// or ws:// server, say. Only on TCP can it be a TLS server (gRPC's
    TLS is not offered over Unix sockets here)."""
    unix = endpoint.startswith("grpc+unix:")
    others = "unix://, ws+unix:// or http+unix://" if unix else "tcp://, ws:// or sse+http://"
    tls = "" if unix else "; or it serves TLS: then connect to grpcs:// with cafile="
    return ChannelBroken(
        f"{endpoint} accepted the connection and closed it before gRPC could talk: what "
        f"listens there does not speak gRPC (HTTP/2) (an ipcwire {others} server?); check "
        f"that the URL's scheme is the server's{tls} ({text})",
        endpoint=endpoint,
    )


def unary_doing(sent: int, details: str | None) -> str:
    """What a unary call was doing when it failed, for :func:`error_from_status`: connecting
    when it was the channel's first, and whenever grpcio could not connect (the server went
    away since: nothing of the call was sent, as for a refused connect); else requesting."""
    if not sent or "failed to connect" in (details or "").lower():
        return "connecting"
    return "requesting"


def pack_batch(items: Sequence[bytes]) -> bytes:
    """One gRPC message carrying ``items`` (see the module's docstring)."""
    parts = [BATCH_MARKER]
    for data in items:
        parts.append(len(data).to_bytes(4, "little"))
        parts.append(data)
    return b"".join(parts)


def plan_batches(items: Sequence[bytes], limit: int) -> Iterator[tuple[bytes, int, int]]:
    """``items`` as the gRPC messages to write to a peer that reads batches and accepts
    ``limit`` bytes: each as (message, how many items, their bytes), packed as they are
    taken. Consecutive items go into one batch while it stays within :data:`BATCH_BYTES`,
    :data:`BATCH_MESSAGES` and ``limit``; an item alone is sent as it is, unless it begins
    with the marker."""
    room = min(BATCH_BYTES, limit) - len(BATCH_MARKER)
    i, n = 0, len(items)
    while i < n:
        first = items[i]
        j, left, size = i + 1, room - 4 - len(first), len(first)
        while j < n and j - i < BATCH_MESSAGES and len(items[j]) + 4 <= left:
            left -= len(items[j]) + 4
            size += len(items[j])
            j += 1
        if j - i == 1 and not first.startswith(BATCH_MARKER):
            yield first, 1, size
        else:
            yield pack_batch(items[i:j]), j - i, size
        i = j


def unpack_batch(msg: bytes, url: str) -> list[bytes]:
    """The messages of a batch (``msg`` begins with :data:`BATCH_MARKER`); gRPC has already
    held the whole batch to the receiver's limit, so each message is within it too. None for
    :data:`BYE`.

    Raises:
        RemoteProtocolError: the lengths do not add up to the batch (nothing is delivered).
    """
    view = memoryview(msg)
    end = len(msg)
    pos = len(BATCH_MARKER)
    if end >= pos + 4 and int.from_bytes(view[pos : pos + 4], "little") == _FAILED:
        reason = readable_reason(bytes(view[pos + 4 : pos + 4 + MAX_REASON]))
        raise failed_error(f"the client of {url}", reason, url)
    out: list[bytes] = []
    while pos < end:
        if pos + 4 > end:
            break
        size = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if pos + size > end:
            break
        out.append(bytes(view[pos : pos + size]))
        pos += size
    else:
        if out or end == len(BATCH_MARKER):  # (empty: the client's goodbye, BYE)
            return out
    raise RemoteProtocolError(
        f"{url} sent a garbled batch of messages ({end} bytes; the lengths inside do not add "
        f"up): a bug in the peer's ipcwire gRPC implementation; none of it was delivered",
        endpoint=url,
    )


def failed_bye(reason: str) -> bytes:
    """A failed client's last stream message, instead of :data:`BYE` (see the docstring)."""
    return BATCH_MARKER + _FAILED.to_bytes(4, "little") + reason.encode()[:MAX_REASON]


def failure_details(reason: str) -> str:
    """The status details of a server channel that ended after an error (with INTERNAL)."""
    return FAILED_DETAILS + reason


def marker_check(data: bytes, limit: int, url: str) -> None:
    """A message that begins with the batch marker travels as a batch of one, 12 bytes longer.

    Raises:
        FrameTooLarge: then over the peer's limit (nothing sent).
    """
    if len(data) + BATCH_OVERHEAD > limit:
        raise FrameTooLarge(
            f"message of {len(data)} bytes not sent to {url}: it begins with ipcwire's gRPC "
            f"batch marker, so it travels as a batch of one ({BATCH_OVERHEAD} bytes more), "
            f"over the peer's limit of {limit} bytes; raise max_frame= on the peer",
            size=len(data) + BATCH_OVERHEAD,
            limit=limit,
            endpoint=url,
        )


def reads_batches(md: dict[str, str]) -> bool:
    """Whether the side that sent this metadata reads batches."""
    return md.get(BATCH_KEY) == "1"


# A plain gRPC client's stream ends the same way in grpcio whether the client half-closed it
# (a clean end) or cancelled it: the request stream ends, and a cancel is reported apart, a
# moment later (well under a millisecond on loopback). How long the server waits for that
# report before taking the end as clean: what a half-close costs before EndOfChannel.
CANCEL_GRACE: Final = 0.1


def client_cancelled(url: str) -> ChannelBroken:
    """The end of a plain gRPC client's stream that it cancelled instead of half-closing."""
    return ChannelBroken(
        f"the client of {url} cancelled its stream (gRPC CANCELLED: its call was cancelled, "
        "its process or connection died, or this listener was closed); that is not a clean "
        "end: a gRPC client ends a stream by half-closing it (done_writing(), or the end of "
        "its request iterator)",
        endpoint=url,
    )


def lost_client(url: str) -> ChannelBroken:
    """The end of an ipcwire client's stream that came without its goodbye."""
    return ChannelBroken(
        f"the client of {url} went away: its stream ended without its close (the process was "
        "killed or its connection lost, or this listener was closed)",
        endpoint=url,
    )


def says_bye(md: dict[str, str]) -> bool:
    """Whether the client that sent this metadata ends its stream with :data:`BYE`."""
    return md.get(BYE_KEY) == "1"


def client_metadata(options: ChannelOptions, url: str, nonce: bytes) -> list[tuple[str, str]]:
    """What the client tells the server on every call."""
    md = [
        (CODEC_KEY, options.codec.name),
        (MAX_FRAME_KEY, str(options.max_frame)),
        (BATCH_KEY, "1"),
        (BYE_KEY, "1"),
    ]
    if options.token is not None:
        md += [("authorization", bearer(options.token, url)), (NONCE_KEY, nonce.hex())]
    return md


def frame_limit(raw: str | None) -> int | None:
    """A max-frame metadata value as a number, or None when it is not one: ASCII digits
    only, at most 18 of them (``int()`` would take "²", and refuse 5000 digits, with
    ValueError)."""
    if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        return None
    return int(raw)


def check_welcome(initial: dict[str, str], options: ChannelOptions, url: str, nonce: bytes) -> int:
    """The server's send limit from its initial metadata, after checking its proof.

    Raises:
        RemoteProtocolError: not an ipcwire server. AuthenticationFailed: no or wrong proof.
    """
    limit = frame_limit(initial.get(MAX_FRAME_KEY))
    if limit is None:
        raise RemoteProtocolError(
            f"{url} accepted the stream but is not an ipcwire gRPC endpoint", endpoint=url
        )
    if options.token is not None:
        want = proof(options.token, nonce)
        if not same_secret(initial.get(PROOF_KEY), want):
            raise AuthenticationFailed(
                f"{url} did not prove that it knows the token (it requires none, or another); "
                f"refusing to talk to it",
                endpoint=url,
            )
    return limit
