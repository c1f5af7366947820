"""A codec and a framing together: objects to wire bytes and wire frames to objects.

:meth:`WireFormat.pack` returns what a driver writes in one call: a single buffer for
ordinary messages, or a ``(header, payload)`` pair for large raw-bytes payloads (written with
one vectored ``sendmsg``/``writelines`` so the payload is never copied).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from ipcwire._core.codecs import BytesCodec, Codec, _MsgspecCodec, encoder_for, unsendable
from ipcwire._core.framing import (
    DEFAULT_MAX_FRAME,
    FRAMINGS,
    HEADER,
    LengthPrefixDecoder,
    NdjsonDecoder,
    make_decoder,
)
from ipcwire.errors import (
    ConfigurationError,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
    RemoteProtocolError,
)

__all__ = ["Packed", "WireFormat", "checked_decode", "decode_batch", "take_held"]

Buffer = bytes | bytearray | memoryview
Packed = Buffer | tuple[bytes, Buffer]

_COPY_LIMIT: Final = 32 * 1024  # below this a header+payload copy is cheaper than sendmsg
_header = HEADER.pack


class WireFormat:
    """Packs objects into frames and unpacks frames into objects, for one channel.

    ``max_frame`` limits what this side accepts; ``send_limit`` what it may send (the peer's
    limit, learned in the handshake, or the same as ``max_frame``).
    """

    __slots__ = (
        "_codec_decode",
        "_encode",
        "_encode_into",
        "codec",
        "decode",
        "endpoint",
        "framing",
        "max_frame",
        "packer",
        "send_limit",
    )

    def __init__(
        self,
        codec: Codec,
        framing: str = "length",
        max_frame: int = DEFAULT_MAX_FRAME,
        *,
        endpoint: str | None = None,
    ) -> None:
        if framing not in FRAMINGS:
            raise ConfigurationError(f"unknown framing {framing!r}; use one of {FRAMINGS}")
        if framing == "ndjson" and codec.name not in ("json", "bytes"):
            raise ConfigurationError(
                f"framing='ndjson' carries JSON lines (codec='json') or raw lines "
                f"(codec='bytes'), not codec={codec.name!r}"
            )
        self.codec = codec
        self.framing = framing
        self.max_frame = max_frame
        self.send_limit = max_frame
        self.endpoint = endpoint
        self._codec_decode = codec.decode
        # What drivers call per received message. ipcwire's bytes codec cannot fail; another
        # codec's failure (a subclass of it too) is given the endpoint (codecs are shared by
        # every channel).
        self.decode = (
            codec.decode if type(codec) is BytesCodec or endpoint is None else self._decode
        )
        self._encode = codec.encode
        self._encode_into = codec.encode_into if isinstance(codec, _MsgspecCodec) else None
        # What drivers call per message: pack, or a shortcut for small raw bytes (the most
        # common hot path: no encoding, one header concatenation).
        self.packer = self._pack_raw if framing == "length" and self.is_raw else self.pack

    def decoder(self, *, small: bool = False) -> LengthPrefixDecoder | NdjsonDecoder:
        """A fresh frame decoder for this format's framing and receive limit (``small``: a
        listener's, for a client still in its handshake; see FrameDecoder)."""
        return make_decoder(self.framing, self.max_frame, endpoint=self.endpoint, small=small)

    def _decode(self, data: memoryview) -> Any:
        """Decode one payload; any failure is RemoteProtocolError naming the endpoint.

        Raises:
            RemoteProtocolError: the payload does not decode (the codec's own error, or, from
                a custom codec, any exception, as ``__cause__``).
        """
        try:
            return self._codec_decode(data)
        except RemoteProtocolError as exc:
            if exc.endpoint is not None:
                raise
            raise RemoteProtocolError(
                f"{exc} (a message from {self.endpoint}, skipped); "
                f"do both sides use codec={self.codec.name!r}?",
                endpoint=self.endpoint,
            ) from exc
        except IpcwireError:
            raise
        except Exception as exc:
            raise RemoteProtocolError(
                f"a message from {self.endpoint} does not decode with codec="
                f"{self.codec.name!r} ({type(exc).__name__}: {exc}); it was skipped",
                endpoint=self.endpoint,
            ) from exc

    def _too_large(self, size: int) -> FrameTooLarge:
        where = f" to {self.endpoint}" if self.endpoint else ""
        return FrameTooLarge(
            f"message of {size} bytes not sent{where}: over the limit of {self.send_limit} "
            f"bytes; raise max_frame= on both sides, or split the message",
            size=size,
            limit=self.send_limit,
            endpoint=self.endpoint,
        )

    @property
    def encoder(self) -> Callable[[Any], Any]:
        """The codec's ``encode``, its refusals naming this channel's endpoint (for drivers
        that hand a whole message to their transport rather than :meth:`pack` it)."""
        return encoder_for(self.codec, self.endpoint)

    def _unsendable(self, exc: LocalProtocolError) -> LocalProtocolError:
        """A codec's refusal to encode, naming the endpoint it was for."""
        return unsendable(exc, self.endpoint)

    def _pack_raw(self, obj: Any) -> Packed:
        if type(obj) is bytes:
            n = len(obj)
            if n <= _COPY_LIMIT and n <= self.send_limit:
                return _header(n) + obj
        return self.pack(obj)

    def pack(self, obj: Any) -> Packed:
        """Encode and frame one message.

        Raises:
            FrameTooLarge: over the send limit (nothing was written).
            LocalProtocolError: the object cannot be encoded with this codec.
        """
        try:
            if self.framing == "length":
                enc_into = self._encode_into
                if enc_into is not None:
                    buf = bytearray(4)
                    enc_into(obj, buf, 4)
                    size = len(buf) - 4
                    if size > self.send_limit:
                        raise self._too_large(size)
                    HEADER.pack_into(buf, 0, size)
                    return buf
                payload = self._encode(obj)
                size = len(payload) if type(payload) is bytes else memoryview(payload).nbytes
                if size > self.send_limit:
                    raise self._too_large(size)
                if size > _COPY_LIMIT:
                    return (HEADER.pack(size), payload)
                return HEADER.pack(size) + payload
            return self._pack_line(obj)
        except LocalProtocolError as exc:
            raise self._unsendable(exc) from exc.__cause__

    def _pack_line(self, obj: Any) -> Buffer:
        enc_into = self._encode_into
        if enc_into is not None:
            buf = bytearray()
            enc_into(obj, buf, 0)
            size = len(buf)
        else:
            payload = self._encode(obj)
            if b"\n" in payload:
                raise LocalProtocolError(
                    "a message sent with framing='ndjson' and codec='bytes' must not contain "
                    "a newline; use framing='length' for arbitrary bytes"
                )
            buf = bytearray(payload)
            size = len(buf)
        if size > self.send_limit:
            raise self._too_large(size)
        buf.append(10)
        return buf

    def pack_many(self, objs: Iterable[Any]) -> bytearray:
        """Frame several messages into one buffer, to be written with one call."""
        try:
            out = bytearray()
            if self.framing == "length":
                enc_into = self._encode_into
                limit = self.send_limit
                for obj in objs:
                    start = len(out)
                    if enc_into is not None:
                        enc_into(obj, out, start + 4)
                        size = len(out) - start - 4
                        if size > limit:
                            raise self._too_large(size)
                        HEADER.pack_into(out, start, size)
                    else:
                        payload = self._encode(obj)
                        # bytes of the payload, not items (a memoryview of 4-byte ints)
                        size = (
                            len(payload) if type(payload) is bytes else memoryview(payload).nbytes
                        )
                        if size > limit:
                            raise self._too_large(size)
                        out += HEADER.pack(size)
                        out += payload
                return out
            for obj in objs:
                out += self._pack_line(obj)
            return out
        except LocalProtocolError as exc:
            raise self._unsendable(exc) from exc.__cause__

    @property
    def is_raw(self) -> bool:
        """True when payloads are passed through untouched: ipcwire's own bytes codec, not a
        subclass (which may encode or decode its own way, so its methods must run)."""
        return type(self.codec) is BytesCodec


def checked_decode(codec: Codec, endpoint: str) -> Callable[[Any], Any]:
    """``codec.decode`` for a mechanism that decodes whole messages itself (WebSocket, gRPC):
    as :attr:`WireFormat.decode`, any failure is RemoteProtocolError naming ``endpoint``
    (a custom codec's own exception as ``__cause__``)."""
    return WireFormat(codec, endpoint=endpoint).decode


def decode_batch(
    decode: Callable[[Any], Any], payloads: Sequence[Any], held: deque[Any]
) -> list[Any]:
    """Decode payloads that were received together (``recv_many``), never losing one.

    A payload that does not decode ends the batch: the messages before it are returned, and
    its error, then the payloads after it, are left in ``held`` for :func:`take_held`; with
    no message before it, its error is raised at once (the rest still left in ``held``). So
    the error comes in the bad message's place and the channel goes on.
    """
    out: list[Any] = []
    for i, payload in enumerate(payloads):
        try:
            out.append(decode(payload))
        except Exception as exc:
            held.extend(payloads[i + 1 :])
            if not out:
                raise
            held.appendleft(exc)
            return out
    return out


def decode_taken(
    decode: Callable[[Any], Any], raw: list[bytes], put_back: Callable[[list[bytes]], None]
) -> list[Any]:
    """Decode messages taken from an inbox together (``recv_many``), never losing one.

    A message that does not decode ends the batch: those before it are returned, and it goes
    back first (the next receive raises its error), the rest after it, through ``put_back``
    (which returns them to the front of the inbox, in order); with none before it, its error
    is raised now and the rest go back.
    """
    if len(raw) == 1:
        return [decode(memoryview(raw[0]))]
    out: list[Any] = []
    for i, m in enumerate(raw):
        try:
            out.append(decode(memoryview(m)))
        except Exception:
            back = raw[i:] if out else raw[i + 1 :]
            if back:
                put_back(back)
            if not out:
                raise
            break
    return out


def take_held(
    decode: Callable[[Any], Any], held: deque[Any], max_messages: int | None = None
) -> list[Any]:
    """Up to ``max_messages`` messages (at least one) from what :func:`decode_batch` left in
    ``held``, in order; a held error, or a payload that does not decode, is raised when it is
    first, else it ends the batch and stays first in ``held``."""
    out: list[Any] = []
    while held and (max_messages is None or max_messages <= 0 or len(out) < max_messages):
        item = held.popleft()
        try:
            if isinstance(item, BaseException):
                raise item
            out.append(decode(item))
        except Exception as exc:
            if not out:
                raise
            held.appendleft(exc)
            break
    return out
