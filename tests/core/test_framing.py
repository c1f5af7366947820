"""Framing decoders: bytes split at every boundary, never a partial frame, limits enforced."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcwire._core.framing import HEADER, LengthPrefixDecoder, NdjsonDecoder, make_decoder
from ipcwire.errors import FrameTooLarge


def _length_stream(payloads: list[bytes]) -> bytes:
    return b"".join(HEADER.pack(len(p)) + p for p in payloads)


def _drain(dec: LengthPrefixDecoder | NdjsonDecoder) -> list[bytes]:
    out = []
    while (frame := dec.next_frame()) is not None:
        out.append(bytes(frame))
    return out


def _feed_in_chunks(
    dec: LengthPrefixDecoder | NdjsonDecoder, data: bytes, cuts: list[int]
) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        dec.feed(data[pos:cut])
        pos = cut
        out.extend(_drain(dec))
    return out


@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(0, 10_000)))
def test_length_prefix_any_split(payloads: list[bytes], cuts: list[int]) -> None:
    data = _length_stream(payloads)
    assert _feed_in_chunks(LengthPrefixDecoder(), data, cuts) == payloads


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=10))
def test_length_prefix_every_single_split_point(payloads: list[bytes]) -> None:
    data = _length_stream(payloads)
    for cut in range(len(data) + 1):
        assert _feed_in_chunks(LengthPrefixDecoder(), data, [cut]) == payloads


_line = (
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")).filter(bool)
)


@given(st.lists(_line, max_size=20), st.lists(st.integers(0, 10_000)), st.booleans())
def test_ndjson_any_split(lines: list[bytes], cuts: list[int], crlf: bool) -> None:
    end = b"\r\n" if crlf else b"\n"
    data = b"".join(line + end for line in lines)
    assert _feed_in_chunks(NdjsonDecoder(), data, cuts) == lines


def test_partial_frame_is_never_returned() -> None:
    dec = LengthPrefixDecoder()
    data = _length_stream([b"abcdef"])
    for i in range(len(data) - 1):
        dec.feed(data[i : i + 1])
        assert dec.next_frame() is None
    dec.feed(data[-1:])
    assert bytes(dec.next_frame() or b"") == b"abcdef"
    nd = NdjsonDecoder()
    nd.feed(b'{"half": ')
    assert nd.next_frame() is None
    assert nd.buffered == 9


def test_empty_ndjson_lines_are_skipped_and_empty_length_frames_kept() -> None:
    nd = NdjsonDecoder()
    nd.feed(b"\n\r\na\n\n")
    assert _drain(nd) == [b"a"]
    dec = LengthPrefixDecoder()
    dec.feed(_length_stream([b"", b"", b"x"]))
    assert _drain(dec) == [b"", b"", b"x"]


def test_oversized_length_frame_is_rejected_early_then_skipped() -> None:
    dec = LengthPrefixDecoder(max_frame=10, endpoint="unix:///x.sock")
    dec.feed(HEADER.pack(11))  # only the header: rejected before the payload arrives
    with pytest.raises(FrameTooLarge) as info:
        dec.next_frame()
    err = info.value
    assert (err.size, err.limit, err.endpoint) == (11, 10, "unix:///x.sock")
    assert "11" in str(err) and "10" in str(err) and "unix:///x.sock" in str(err)
    dec.feed(b"A" * 5)  # the rest of the oversized payload arrives in pieces
    assert dec.next_frame() is None
    dec.feed(b"A" * 6 + _length_stream([b"next"]))
    assert _drain(dec) == [b"next"]  # nothing of the oversized frame was delivered


def test_a_text_line_read_as_a_length_prefix_says_to_use_ndjson() -> None:
    """A shell's ``echo '{"op": 1}' > fifo`` into a length-framed reader: the length read
    from '{"op' is 2 GB; the error names the likely cause (a fifo.md example did this)."""
    dec = LengthPrefixDecoder(max_frame=1 << 26, endpoint="fifo:///app.fifo")
    dec.feed(b'{"op": "reload"}\n')
    with pytest.raises(FrameTooLarge, match=r"looks like text.*framing='ndjson'"):
        dec.next_frame()
    dec = LengthPrefixDecoder(max_frame=10, endpoint="fifo:///app.fifo")
    dec.feed(HEADER.pack(0x7FFF0000))  # binary: no such guess
    with pytest.raises(FrameTooLarge) as info:
        dec.next_frame()
    assert "ndjson" not in str(info.value)


def test_oversized_ndjson_line_is_rejected_before_its_newline_then_skipped() -> None:
    nd = NdjsonDecoder(max_frame=8)
    nd.feed(b"x" * 9)
    with pytest.raises(FrameTooLarge, match="a line is at least 9 bytes"):  # its end unknown
        nd.next_frame()
    nd.feed(b"yyyy\nok\n")
    assert _drain(nd) == [b"ok"]
    nd.feed(b"z" * 9 + b"\nfine\n")  # a whole oversized line in one read
    with pytest.raises(FrameTooLarge, match="a line is 9 bytes"):
        nd.next_frame()
    assert _drain(nd) == [b"fine"]


def test_read_into_buffer_like_a_socket_would() -> None:
    dec = make_decoder("length", 1 << 20)
    data = _length_stream([bytes(range(256)) * 1000, b"small"])
    pos = 0
    frames = []
    while pos < len(data):
        view = dec.get_buffer()
        n = min(len(view), len(data) - pos, 7919)
        view[:n] = data[pos : pos + n]
        dec.buffer_updated(n)
        pos += n
        frames.extend(_drain(dec))
    assert frames == [bytes(range(256)) * 1000, b"small"]
    dec.shrink()
    assert dec.buffered == 0


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.sampled_from(["length", "ndjson"]), st.integers(0, 64))
def test_fuzz_decoders_only_return_frames_or_raise_frame_too_large(
    junk: bytes, framing: str, limit: int
) -> None:
    dec = make_decoder(framing, limit)
    for i in range(0, len(junk), 97):
        dec.feed(junk[i : i + 97])
        while True:
            try:
                frame = dec.next_frame()
            except FrameTooLarge as exc:
                assert exc.size > limit
                continue
            if frame is None:
                break
            assert len(frame) <= limit


@given(st.lists(st.binary(max_size=3000), max_size=12), st.lists(st.integers(0, 40_000)))
def test_a_small_decoder_returns_the_same_frames_and_grows_with_what_arrives(
    payloads: list[bytes], cuts: list[int]
) -> None:
    """A listener's decoder for a client in its handshake (small=True) starts at 4 KiB and
    never holds more than twice what has arrived (plus those 4 KiB), read like a socket."""
    data = _length_stream(payloads)
    dec = make_decoder("length", 1 << 20, small=True)
    frames: list[bytes] = []
    pos = 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        while pos < cut:
            view = dec.get_buffer(65536)  # (uvloop's hint: ignored while small)
            n = min(len(view), cut - pos)
            view[:n] = data[pos : pos + n]
            dec.buffer_updated(n)
            pos += n
            assert len(dec._buf) <= 2 * dec.buffered + 4096
            frames.extend(_drain(dec))
    assert frames == payloads


def test_grow_keeps_what_arrived_and_gives_the_ordinary_buffer() -> None:
    dec = make_decoder("ndjson", small=True)
    dec.feed(b'{"a": 1}\n{"b"')
    assert len(dec._buf) == 4096
    dec.grow()
    assert len(dec._buf) == 256 * 1024
    dec.feed(b": 2}\n")
    assert _drain(dec) == [b'{"a": 1}', b'{"b": 2}']


def _read_like_a_socket(
    dec: LengthPrefixDecoder, data: bytes, chunk: int = 100_003
) -> tuple[list[bytes], int]:
    """Feed ``data`` through get_buffer/buffer_updated, at most ``chunk`` bytes a read;
    the frames and how many buffers the decoder allocated. After every read the buffer holds
    no more than the ordinary 256 KiB, or twice what has arrived and a read more (what
    arrived: ``data`` so far, and what the buffer held before)."""
    before = len(dec._buf)
    frames: list[bytes] = []
    buffers = 0
    pos = 0
    while pos < len(data):
        view = dec.get_buffer()
        if view.obj is not dec._buf or pos == 0:
            buffers += 1
        n = min(len(view), len(data) - pos, chunk)
        view[:n] = data[pos : pos + n]
        dec.buffer_updated(n)
        pos += n
        assert len(dec._buf) <= max(before, 256 * 1024, 2 * pos + 3 * 65536)
        frames.extend(_drain(dec))
    return frames, buffers


def test_a_frame_header_alone_does_not_allocate_what_it_announces() -> None:
    """Before: the read after a header announcing 60 MiB offered a 64 MiB buffer, whether
    or not the bytes ever came (a peer took max_frame from a server with 4 bytes)."""
    dec = LengthPrefixDecoder()
    frames, _ = _read_like_a_socket(dec, HEADER.pack(60 << 20) + b"x" * 65536)
    assert frames == []
    view = dec.get_buffer()  # the next read
    assert len(dec._buf) <= 256 * 1024
    assert len(view) >= 65536


def test_a_large_frame_grows_the_buffer_as_it_arrives_and_arrives_whole() -> None:
    payload = bytes(range(256)) * (8 << 12) + b"tail!"  # 8 MiB and 5 bytes
    dec = LengthPrefixDecoder()
    frames, buffers = _read_like_a_socket(dec, _length_stream([payload, b"next"]))
    assert frames == [payload, b"next"]
    assert buffers <= 7  # doubling from 256 KiB (no copy per read): 256K .. 8 MiB + 9
    assert len(dec._buf) <= len(payload) + 65536  # its last step: room for exactly the rest
    # the next one of that size fits in the buffer it has
    again, more = _read_like_a_socket(dec, _length_stream([payload]))
    assert again == [payload] and more == 1
