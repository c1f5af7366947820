"""Codecs, the pickle rule, the wire format's limits, and URL parsing."""

from __future__ import annotations

from typing import Any

import pytest

from ipcwire._core.codecs import get_codec
from ipcwire._core.framing import HEADER
from ipcwire._core.url import parse_url
from ipcwire._core.wire import Packed, WireFormat
from ipcwire.errors import (
    ConfigurationError,
    FrameTooLarge,
    InvalidURL,
    LocalProtocolError,
    RemoteProtocolError,
)


def test_pickle_needs_an_authenticated_channel() -> None:
    with pytest.raises(ConfigurationError, match="remote code execution"):
        get_codec("pickle", authenticated=False)
    assert get_codec("pickle", authenticated=True).name == "pickle"


def test_unknown_codec_and_wrong_types_are_clear() -> None:
    with pytest.raises(ConfigurationError, match="unknown codec"):
        get_codec("yaml", authenticated=False)
    with pytest.raises(LocalProtocolError, match="bytes-like"):
        get_codec("bytes", authenticated=False).encode("text")
    with pytest.raises(LocalProtocolError):
        get_codec("json", authenticated=False).encode(object())
    with pytest.raises(RemoteProtocolError, match="not valid json"):
        get_codec("json", authenticated=False).decode(memoryview(b"{nope"))


@pytest.mark.parametrize(
    ("codec", "data"),
    [("json", b'"\xb2"'), ("json", b'{"\xff": 1}'), ("msgpack", b"\xa1\xb2")],
)
def test_a_string_that_is_not_utf8_is_a_remote_protocol_error(codec: str, data: bytes) -> None:
    # msgspec raises UnicodeDecodeError for these, not its DecodeError
    with pytest.raises(RemoteProtocolError, match=f"not valid {codec}"):
        get_codec(codec, authenticated=False).decode(memoryview(data))


class _Fussy:
    """A custom codec whose decode fails with its own exception."""

    name = "fussy"

    def encode(self, obj: Any) -> bytes:
        return bytes(obj)

    def decode(self, data: memoryview) -> Any:
        raise ValueError("not fussy enough")


def test_a_message_that_does_not_decode_is_named_after_its_endpoint() -> None:
    url = "unix:///run/app.sock"
    wire = WireFormat(get_codec("json", authenticated=False), "length", 1000, endpoint=url)
    with pytest.raises(RemoteProtocolError, match="not valid json") as info:
        wire.decode(memoryview(b"{nope"))
    assert info.value.endpoint == url and url in str(info.value)
    wire = WireFormat(_Fussy(), "length", 1000, endpoint=url)
    with pytest.raises(RemoteProtocolError, match="fussy") as info:
        wire.decode(memoryview(b"x"))
    assert info.value.endpoint == url and url in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize("codec", ["bytes", "json", "msgpack"])
def test_pack_and_pack_many_frame_identically(codec: str) -> None:
    wire = WireFormat(get_codec(codec, authenticated=False), "length", 1000)
    msgs = [b"a", b"bc", b""] if codec == "bytes" else [{"a": 1}, [1, 2], "s"]
    single = b"".join(_flat(wire.pack(m)) for m in msgs)
    assert bytes(wire.pack_many(msgs)) == single
    dec = wire.decoder()
    dec.feed(single)
    got = []
    while (f := dec.next_frame()) is not None:
        got.append(wire.decode(f))
    assert got == msgs


def _flat(packed: Packed) -> bytes:
    if isinstance(packed, tuple):
        return b"".join(bytes(p) for p in packed)
    return bytes(packed)


def test_large_raw_payload_is_not_copied() -> None:
    wire = WireFormat(get_codec("bytes", authenticated=False), "length", 1 << 20)
    payload = b"x" * 100_000
    packed = wire.pack(payload)
    assert isinstance(packed, tuple) and packed[1] is payload
    assert packed[0] == HEADER.pack(100_000)


def test_send_limit_refuses_before_writing() -> None:
    wire = WireFormat(get_codec("json", authenticated=False), "length", 1000, endpoint="tcp://h:1")
    wire.send_limit = 10
    with pytest.raises(FrameTooLarge) as info:
        wire.pack("a" * 20)
    assert info.value.limit == 10 and "tcp://h:1" in str(info.value)


def test_ndjson_framing_rules() -> None:
    with pytest.raises(ConfigurationError):
        WireFormat(get_codec("msgpack", authenticated=False), "ndjson")
    lines = WireFormat(get_codec("bytes", authenticated=False), "ndjson")
    assert _flat(lines.pack(b"one line")) == b"one line\n"
    with pytest.raises(LocalProtocolError, match="newline"):
        lines.pack(b"two\nlines")
    js = WireFormat(get_codec("json", authenticated=False), "ndjson")
    assert _flat(js.pack({"text": "a\nb"})) == b'{"text":"a\\nb"}\n'


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "path"),
    [
        ("unix:///run/app.sock", "unix", "", None, "/run/app.sock"),
        ("unix:@abstract", "unix", "", None, "@abstract"),
        ("unix:rel.sock?codec=json", "unix", "", None, "rel.sock"),
        ("tcp://127.0.0.1:7000", "tcp", "127.0.0.1", 7000, ""),
        ("tcp://[::1]:7000/x", "tcp", "::1", 7000, "/x"),
        ("TCP://localhost:0", "tcp", "localhost", 0, ""),
    ],
)
def test_parse_url(url: str, scheme: str, host: str, port: int | None, path: str) -> None:
    ep = parse_url(url)
    assert (ep.scheme, ep.host, ep.port, ep.path) == (scheme, host, port, path)


def test_parse_url_params_and_errors() -> None:
    assert parse_url("unix:///a?codec=json&framing=ndjson").params == {
        "codec": "json",
        "framing": "ndjson",
    }
    for bad in ["no-scheme", "tcp://h:99999", "://x", "1tcp://h:1"]:
        with pytest.raises(InvalidURL):
            parse_url(bad)


@pytest.mark.parametrize("framing", ["length", "ndjson"])
def test_any_bytes_like_object_packs_as_its_bytes(framing: str) -> None:
    """bytes, bytearray, memoryviews of other formats and strided views (which cannot be
    joined as they are) all go out as their bytes; pack_many agrees with pack."""
    import array

    wire = WireFormat(get_codec("bytes", authenticated=False), framing, 1 << 20)
    objs: list[bytes | bytearray | memoryview] = [
        b"abc",
        bytearray(b"def"),
        memoryview(b"ghi"),
        memoryview(array.array("I", [1, 2])),
        memoryview(b"abcdef")[::2],
        memoryview(b"y" * 70_000)[::2],  # large: the no-copy path
    ]
    for obj in objs:
        want = memoryview(obj).tobytes()
        frame = _flat(wire.pack(obj))
        if framing == "length":
            assert frame == HEADER.pack(len(want)) + want
        else:
            assert frame == want + b"\n"
    assert bytes(wire.pack_many(objs)) == b"".join(_flat(wire.pack(o)) for o in objs)


def test_a_message_the_codec_cannot_encode_names_the_endpoint() -> None:
    """A str sent on a bytes channel said which codec refused it, not where it was going."""
    from ipcwire._core.codecs import BytesCodec
    from ipcwire._core.wire import WireFormat
    from ipcwire.errors import LocalProtocolError

    for framing in ("length", "ndjson"):
        wire = WireFormat(BytesCodec(), framing, endpoint="unix:///run/app.sock")
        for many in (False, True):
            with pytest.raises(LocalProtocolError) as info:
                wire.pack_many([b"ok", "text"]) if many else wire.packer("text")
            assert info.value.endpoint == "unix:///run/app.sock"
            assert "not sent to unix:///run/app.sock" in str(info.value)
