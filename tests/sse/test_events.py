"""The I/O-free parts of SSE: the event-stream parser and the chunked decoder, fed with bytes
split at every boundary."""

from __future__ import annotations

import pytest

from ipcwire.errors import RemoteProtocolError
from ipcwire.sse._events import (
    Event,
    EventParser,
    decode_data,
    encode_data,
    event_bytes,
    format_id,
    parse_id,
)
from ipcwire.sse._http import ChunkedDecoder, parse_head

STREAM = (
    b"\xef\xbb\xbf"  # a BOM, dropped
    b": a comment\r\n"
    b"retry: 250\n"
    b"id: s-0\n\n"  # moves the last event ID, dispatches nothing
    b"data: one\r\n\r\n"
    b"event: update\rid: s-2\rdata: two\rdata:  lines\r\r"
    b"data\n\n"  # a field with no colon: empty data, still an event
    b"retry: soon\n"  # not digits: ignored
    b"id: bad\x00id\n"  # holds NUL: ignored
    b'data:{"json": true}\n\n'
    b"data: unterminated"  # no empty line yet: not dispatched
)

EXPECTED = [
    Event("message", b"one", "s-0"),
    Event("update", b"two\n lines", "s-2"),
    Event("message", b"", "s-2"),
    Event("message", b'{"json": true}', "s-2"),
]


def _parse(chunks: list[bytes], max_data: int = 1000) -> tuple[list[Event], EventParser]:
    parser = EventParser(max_data)
    out: list[Event] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out, parser


def test_parser_follows_the_standard_at_every_split() -> None:
    for i in range(len(STREAM) + 1):
        for j in range(i, len(STREAM) + 1, 7):
            events, parser = _parse([STREAM[:i], STREAM[i:j], STREAM[j:]])
            assert events == EXPECTED, (i, j)
            assert parser.retry == 250
            assert parser.last_id == "s-2"
            assert parser.comments == 1
    events, _ = _parse([bytes([b]) for b in STREAM])  # one byte at a time
    assert events == EXPECTED


def test_parser_drops_oversized_events_without_buffering_them() -> None:
    big = b"data: " + b"x" * 50 + b"\n\n"
    huge = b"data: " + b"y" * 5000 + b"\ndata: more\n\n"  # over max_data + 64: discarded
    stream = big + huge + b"id: after\ndata: ok\n\n"
    for i in range(0, len(stream), 13):
        events, parser = _parse([stream[:i], stream[i:]], max_data=20)
        assert [e.oversize > 0 for e in events] == [True, True, False], i
        assert events[1].oversize >= 5000
        assert events[2] == Event("message", b"ok", "after")
        assert len(parser._buf) == 0


def test_resuming_keeps_the_last_id_and_forgets_partial_events() -> None:
    parser = EventParser(100)
    assert parser.feed(b"id: s-4\ndata: a\n\nid: s-5\ndata: half") == [
        Event("message", b"a", "s-4")
    ]
    parser.new_connection()
    assert parser.last_id == "s-4"
    assert parser.feed(b"data: b\n\n") == [Event("message", b"b", "s-4")]


def test_payload_encoding_and_ids() -> None:
    assert encode_data(b'{"a":1}', text=True) == b'{"a":1}'
    raw = bytes(range(256))
    assert decode_data(encode_data(raw, text=False), text=False) == raw
    assert parse_id(format_id("abc-def", 17)) == ("abc-def", 17)
    assert parse_id("no-number-x") is None
    assert parse_id("") is None
    ev = event_bytes("s-1", b"two\nlines", "kind")
    events, _ = _parse([ev])
    assert events == [Event("kind", b"two\nlines", "s-1")]


def test_chunked_decoder_at_every_split() -> None:
    body = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nignored"
    for i in range(len(body) + 1):
        dec = ChunkedDecoder("test")
        out = bytes(dec.feed(body[:i])) + bytes(dec.feed(body[i:]))
        assert out == b"hello 0123456789", i
        assert dec.done


def test_response_head() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-A: 1\r\nx-a: 2\r\n\r\nbody"
    assert parse_head(raw[:20], "u") is None
    parsed = parse_head(raw, "u")
    assert parsed is not None
    head, size = parsed
    assert (head.status, head.get("X-A"), raw[size:]) == (200, "1, 2", b"body")


def test_digits_are_ascii_digits() -> None:
    """``str.isdigit`` is true for "²" (and Arabic-Indic digits), which ``int`` refuses: an id, a
    status or a header holding them is not a number (never a ValueError from a parser)."""
    assert parse_id("s-²") is None
    assert parse_id("s-\u0661\u0662") is None
    assert parse_id("s-12") == ("s", 12)
    with pytest.raises(RemoteProtocolError, match="status line"):
        parse_head("HTTP/1.1 ²00 OK\r\n\r\n".encode("latin-1"), "u")


def test_numbers_too_long_for_int_are_not_numbers() -> None:
    """int() refuses more than 4300 digits (ValueError): a status, a retry: or an
    X-Ipcwire-Max-Frame that long is malformed or ignored, never a ValueError."""
    with pytest.raises(RemoteProtocolError, match="status line"):
        parse_head(b"HTTP/1.1 " + b"2" * 5000 + b" OK\r\n\r\n", "u")
    events, parser = _parse([b"retry: " + b"9" * 5000 + b"\ndata: x\n\n"])
    assert [e.data for e in events] == [b"x"]
    assert parser.retry is None
