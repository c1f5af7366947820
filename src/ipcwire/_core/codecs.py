"""Codecs: how a Python object becomes a message payload and back.

* ``bytes`` (default): bytes-like objects in, ``bytes`` out; no encoding at all.
* ``json``: JSON through msgspec (``ndjson`` framing implies it).
* ``msgpack``: MessagePack through msgspec.
* ``pickle``: only on an authenticated channel (``token=``), because unpickling what an
  unauthenticated peer sent is remote code execution. Refused otherwise.

A custom codec is any object with ``name``, ``encode(obj) -> bytes | bytearray | memoryview``
and ``decode(buffer) -> obj``: :class:`Codec` (``from ipcwire import Codec``) describes it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, Final, Protocol, runtime_checkable

import msgspec

from ipcwire.errors import (
    ConfigurationError,
    FrameTooLarge,
    LocalProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "CODECS",
    "DECODE_ERRORS",
    "ENCODE_ERRORS",
    "Codec",
    "encode_message",
    "encoder_for",
    "get_codec",
    "unsendable",
]

Buffer = bytes | bytearray | memoryview

# What decoding JSON or MessagePack with msgspec raises for bytes that are not a valid document:
# its DecodeError, UnicodeDecodeError (which msgspec lets through as it is) for a string that
# is not UTF-8, and RecursionError for arrays or maps nested deeper than Python's recursion
# limit (``[`` a thousand times: 1 KiB from any peer). Catch all three wherever a
# peer's bytes are decoded.
DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

# What encoding raises for an object its codec cannot take: msgspec's EncodeError, TypeError
# (an unsupported type), OverflowError (an int over 64 bits in MessagePack), and, let through
# as they are, UnicodeEncodeError (a str with a lone surrogate, "\ud800") and RecursionError
# (a list nested deeper than the recursion limit).
ENCODE_ERRORS: Final = (
    TypeError, msgspec.EncodeError, OverflowError, UnicodeEncodeError, RecursionError
)  # fmt: skip


@runtime_checkable
class Codec(Protocol):
    """What a codec provides, for ``codec=`` (public as ``ipcwire.Codec``).

    ``name`` is what the handshake compares (both sides must give the same); ``encode``
    returns ``bytes``, ``bytearray`` or ``memoryview`` (annotate it so: a wider return type
    such as ``collections.abc.Buffer`` does not match under ``mypy --strict``); ``decode``
    gets a ``memoryview`` that is only valid during the call (copy what you keep).
    """

    name: str

    def encode(self, obj: Any) -> Buffer: ...

    def decode(self, data: memoryview) -> Any: ...


class BytesCodec:
    """Raw bytes: send bytes-like objects, receive ``bytes``."""

    name: str = "bytes"

    def encode(self, obj: Any) -> Buffer:
        if type(obj) is bytes or isinstance(obj, bytes | bytearray):
            return obj
        if isinstance(obj, memoryview):
            # a strided view (``view[::2]``) cannot be written or joined as it is: copy it
            return obj if obj.contiguous else obj.tobytes()
        raise LocalProtocolError(
            f"the bytes codec sends bytes-like objects, not {type(obj).__name__}; "
            f"encode it first or open the channel with codec='json' or 'msgpack'"
        )

    def decode(self, data: memoryview) -> Any:
        return bytes(data)


class _MsgspecCodec:
    __slots__ = ("_decode", "_decoder", "_encoder", "name")

    def __init__(self, name: str, encoder: Any, decoder: Any) -> None:
        self.name = name
        self._encoder = encoder
        self._decoder = decoder
        self._decode = decoder.decode

    def encode(self, obj: Any) -> Buffer:
        try:
            return self._encoder.encode(obj)  # type: ignore[no-any-return]
        except ENCODE_ERRORS as exc:
            raise LocalProtocolError(
                f"cannot encode {type(obj).__name__} as {self.name}: {exc}"
            ) from exc

    def encode_into(self, obj: Any, buf: bytearray, offset: int) -> None:
        try:
            self._encoder.encode_into(obj, buf, offset)
        except ENCODE_ERRORS as exc:
            raise LocalProtocolError(
                f"cannot encode {type(obj).__name__} as {self.name}: {exc}"
            ) from exc

    def decode(self, data: memoryview) -> Any:
        try:
            return self._decode(data)
        except DECODE_ERRORS as exc:
            raise RemoteProtocolError(
                f"the peer sent a message that is not valid {self.name}: {exc}"
            ) from exc


class PickleCodec:
    """pickle, for authenticated channels only (checked by :func:`get_codec`)."""

    name: str = "pickle"

    def encode(self, obj: Any) -> Buffer:
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # (an object's own __reduce__ may raise anything)
            raise LocalProtocolError(f"cannot pickle {type(obj).__name__}: {exc}") from exc

    def decode(self, data: memoryview) -> Any:
        try:
            return pickle.loads(data)  # noqa: S301 - only on authenticated channels
        except Exception as exc:
            raise RemoteProtocolError(
                f"the peer sent a message that does not unpickle: {exc}"
            ) from exc


CODECS: Final = ("bytes", "json", "msgpack", "pickle")

_SHARED: dict[str, Codec] = {
    "bytes": BytesCodec(),
    "json": _MsgspecCodec("json", msgspec.json.Encoder(), msgspec.json.Decoder()),
    "msgpack": _MsgspecCodec("msgpack", msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()),
    "pickle": PickleCodec(),
}


def _for(endpoint: str | None) -> str:
    return f" for {endpoint}" if endpoint else ""


def get_codec(codec: str | Codec, *, authenticated: bool, endpoint: str | None = None) -> Codec:
    """Resolve a codec name (or pass a codec object through), enforcing the pickle rule.

    Raises:
        ConfigurationError: unknown name, or pickle on a channel without a token.
    """
    if not isinstance(codec, str):
        if not isinstance(codec, Codec):
            raise ConfigurationError(
                f"codec{_for(endpoint)} must be one of {', '.join(CODECS)} or a Codec object "
                f"(with name, encode and decode), not {type(codec).__name__}",
                endpoint=endpoint,
            )
        return codec
    name = "bytes" if codec in ("raw", "") else codec
    found = _SHARED.get(name)
    if found is None:
        raise ConfigurationError(
            f"unknown codec {codec!r}{_for(endpoint)}; use one of {', '.join(CODECS)}",
            endpoint=endpoint,
        )
    if name == "pickle" and not authenticated:
        raise ConfigurationError(
            f"codec='pickle' refused{_for(endpoint)}: unpickling what an unauthenticated peer "
            f"sends is remote code execution. Pass token=... on both sides (the handshake then "
            f"proves the peer knows it), or use codec='msgpack' or 'json'",
            endpoint=endpoint,
        )
    return found


def encode_message(codec: Codec, obj: Any, limit: int, url: str) -> bytes:
    """One message's bytes, checked against the peer's limit (for mechanisms whose library
    takes a whole message as ``bytes``: HTTP bodies, gRPC messages).

    Raises:
        FrameTooLarge: over ``limit``; nothing was sent.
        LocalProtocolError: the codec cannot encode ``obj``.
    """
    try:
        data = codec.encode(obj)
    except LocalProtocolError as exc:
        raise unsendable(exc, url) from exc.__cause__
    if type(data) is not bytes:
        data = bytes(data)  # the caller may reuse its buffer once send() returns
    if len(data) > limit:
        raise FrameTooLarge(
            f"message of {len(data)} bytes not sent to {url}: over the peer's limit of {limit} "
            f"bytes; raise max_frame= on both sides, or split the message",
            size=len(data),
            limit=limit,
            endpoint=url,
        )
    return data


def unsendable(exc: LocalProtocolError, endpoint: str | None) -> LocalProtocolError:
    """A codec's refusal to encode (the shared codecs know no endpoint), naming the endpoint
    the message was for: "cannot encode C as json: ... (not sent to unix:///x.sock)"."""
    if exc.endpoint is not None or endpoint is None:
        return exc
    return LocalProtocolError(f"{exc} (not sent to {endpoint})", endpoint=endpoint)


def encoder_for(codec: Codec, endpoint: str | None) -> Callable[[Any], Buffer]:
    """``codec.encode``, its refusals naming ``endpoint`` (:func:`unsendable`)."""
    encode = codec.encode
    if endpoint is None:
        return encode

    def encode_for_endpoint(obj: Any) -> Buffer:
        try:
            return encode(obj)
        except LocalProtocolError as exc:
            raise unsendable(exc, endpoint) from exc.__cause__

    return encode_for_endpoint
