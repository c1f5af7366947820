"""The fast paths of SSE, checked against the general ones with bytes alone (no sockets).

The client parses a whole read at once when its events have the usual shape; whatever it
accepts must come out exactly as the general WHATWG parser and the per-event checks would
have it, and anything unusual (CR line endings, comments, other fields, bad base64, skipped
or repeated ids, oversized events) must fall back to them. The server's ``send_one`` keeps
the replay buffer as the general ``append`` does.
"""

from __future__ import annotations

import binascii
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcwire._core.codecs import get_codec
from ipcwire.errors import ChannelBroken, FrameTooLarge, RemoteProtocolError
from ipcwire.options import ChannelOptions
from ipcwire.sse import _events
from ipcwire.sse._client import ClientCore, Raise, SseAddress
from ipcwire.sse._events import _find_blank, _rfind_blank
from ipcwire.sse._http import ResponseHead
from ipcwire.sse._streams import ServerStream

SID = "ab" * 16
URL = "sse+http://127.0.0.1:1/events"


class GeneralCore(ClientCore):
    """The client core without the fast path: the reference."""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        for ev in self.parser.feed(self._body.feed(data)):
            self._event(ev)


def _core(cls: type[ClientCore] = ClientCore, codec: str = "bytes", max_frame: int = 1000) -> Any:
    chosen = get_codec(codec, authenticated=False)
    options = ChannelOptions(url=URL, codec=chosen, max_frame=max_frame)
    core = cls(
        options,
        SseAddress(False, "127.0.0.1", 1, "/events"),
        headers=None,
        last_event_id=None,
        allow_gaps=False,
        retry=1.0,
        retry_for=60.0,
    )
    head = ResponseHead(200, "OK", {"content-type": "text/event-stream", "x-ipcwire-stream": SID})
    assert core.accept_head(head, b"")
    return core


def _outcome(core: Any) -> list[Any]:
    """What recv() would give, in order: payloads, and error types in their places."""
    out: list[Any] = []
    while core.queue:
        try:
            out.append(core.pop())
        except (RemoteProtocolError, FrameTooLarge, ChannelBroken) as exc:
            out.append(type(exc))
    return out


def _event(seq: int, payload: bytes) -> bytes:
    data = binascii.b2a_base64(payload, newline=False)
    return b"id: %s-%d\ndata: %s\n\n" % (SID.encode(), seq, data)


def _stream(n: int, size: int = 40, first: int = 1) -> tuple[bytes, list[bytes]]:
    payloads = [bytes([i % 256]) * (size + i % 5) for i in range(first, first + n)]
    wire = b": hello\nretry: 1000\nid: %s-0\n\n" % SID.encode()  # what a server sends first
    return wire + b"".join(_event(first + i, p) for i, p in enumerate(payloads)), payloads


def _feed_split(core: Any, wire: bytes, cuts: list[int]) -> list[Any]:
    pos = 0
    for cut in [*cuts, len(wire)]:
        core.feed(wire[pos:cut])
        pos = cut
    return _outcome(core)


def test_reads_in_the_usual_shape_give_every_message_at_every_split() -> None:
    wire, payloads = _stream(30)
    for cut in range(0, len(wire) + 1, 3):
        for cut2 in (cut + 1, cut + 97, len(wire)):
            core = _core()
            got = _feed_split(core, wire, [cut, min(cut2, len(wire))])
            assert got == payloads, (cut, cut2)
            assert core.parser.last_id == f"{SID}-30"
            assert core.received == 30
            assert core.bytes_received == sum(map(len, payloads))


def test_the_fast_path_takes_the_usual_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    wire, payloads = _stream(200)
    core = _core()
    head = wire.index(b"-0\n\n") + 4
    core.feed(wire[:head])  # the preamble, the general way
    monkeypatch.setattr(core.parser, "feed", None)  # from here on, falling back would fail
    for cut in range(head, len(wire), 1000):
        core.feed(wire[cut : cut + 1000])
    assert _outcome(core) == payloads


UNUSUAL = {
    "crlf": lambda w: w.replace(b"\n", b"\r\n"),
    "cr": lambda w: w.replace(b"\n", b"\r"),
    "keepalive inside": lambda w: w.replace(b"\n\nid:", b"\n\n: keepalive\n\nid:", 7),
    "retry inside": lambda w: w.replace(b"\n\nid:", b"\n\nretry: 5\nid:", 3),
    "event type": lambda w: w.replace(b"\n\nid:", b"\n\nevent: other\nid:", 2),
    "no space after colon": lambda w: w.replace(b"data: ", b"data:", 4),
    "two data lines": lambda w: w.replace(b"\ndata: ", b"\ndata: QUFB\ndata: ", 5),
    "bad base64": lambda w: w.replace(b"\ndata: ", b"\ndata: *", 6),
    "padding inside": lambda w: w.replace(b"\ndata: ", b"\ndata: QQ==", 6),
    "cr inside data": lambda w: w.replace(b"\ndata: ", b"\ndata: QUFB\rQUFB", 6),
    "skipped id": lambda w: w.replace(b"-5\n", b"-6\n", 1),
    "repeated id": lambda w: w.replace(b"-5\n", b"-4\n", 1),
    "leading zero id": lambda w: w.replace(b"-5\n", b"-05\n", 1),
    "other stream": lambda w: w.replace(SID.encode() + b"-5\n", b"cd" * 16 + b"-5\n", 1),
    "id with nul": lambda w: w.replace(b"-5\n", b"-5\x00\n", 1),
    "blank line doubled": lambda w: w.replace(b"\n\nid:", b"\n\n\nid:", 4),
    "no id": lambda w: w.replace(b"id: %s-5\n" % SID.encode(), b"", 1),
    "oversized": lambda w: w.replace(b"\ndata: ", b"\ndata: " + b"QUFB" * 400, 3),
}


@pytest.mark.parametrize("name", sorted(UNUSUAL))
def test_unusual_streams_come_out_as_the_general_parser_has_them(name: str) -> None:
    wire, _ = _stream(12)
    wire = UNUSUAL[name](wire)
    reference = _outcome(_ref(wire))
    assert reference, name
    for cut in range(len(wire) + 1):
        core = _core()
        assert _feed_split(core, wire, [cut]) == reference, (name, cut)
    core = _core()
    for i in range(len(wire)):  # a byte at a time
        core.feed(wire[i : i + 1])
    assert _outcome(core) == reference, name


def _ref(wire: bytes, max_frame: int = 1000) -> Any:
    core = _core(GeneralCore, max_frame=max_frame)
    core.feed(wire)
    return core


def test_a_malformed_event_is_a_typed_error_in_its_place_never_a_partial_message() -> None:
    wire, payloads = _stream(10)
    bad = wire.replace(b"-4\ndata: ", b"-4\ndata: *")  # event 4 is not base64
    core = _core()
    core.feed(bad)
    assert _outcome(core) == [*payloads[:3], RemoteProtocolError, *payloads[4:]]


def test_json_reads_in_the_usual_shape() -> None:
    body = b"".join(b'id: %s-%d\ndata: {"n": %d}\n\n' % (SID.encode(), i, i) for i in (1, 2, 3))
    for cut in range(len(body) + 1):
        core = _core(codec="json")
        assert _feed_split(core, body, [cut]) == [{"n": 1}, {"n": 2}, {"n": 3}]
    bad = body.replace(b'{"n": 2}', b"{nope")
    core = _core(codec="json")
    core.feed(bad)
    out = _outcome(core)
    assert out[0] == {"n": 1} and out[2] == {"n": 3} and len(out) == 3
    assert not isinstance(out[1], dict)


def test_send_one_keeps_the_replay_buffer_as_append_does() -> None:
    fast = ServerStream(SID, max_events=4, max_bytes=1 << 20, send_limit=1000)
    general = ServerStream(SID, max_events=4, max_bytes=1 << 20, send_limit=1000)
    datas = [binascii.b2a_base64(bytes([i]) * 10, newline=False) for i in range(10)]
    assert not fast.send_one(datas[0])  # nobody attached: the general path keeps the buffer
    for stream in (fast, general):
        stream.attach(None, None, None)
    written = {id(fast): b"", id(general): b""}
    for i, data in enumerate(datas):
        assert fast.send_one(data)
        general.append([data])
        if i % 3 == 2:  # the writer takes what is there
            for stream in (fast, general):
                chunk, upto = stream.pending()
                stream.mark_written(upto, len(chunk))
                written[id(stream)] += chunk
    for stream in (fast, general):
        chunk, upto = stream.pending()
        assert upto == 10
        written[id(stream)] += chunk
        stream.mark_written(upto, len(chunk))
        assert written[id(stream)] == b"".join(_event(i + 1, bytes([i]) * 10) for i in range(10))
        assert stream.unwritten_bytes == 0
    assert fast._log == general._log and len(fast._log) == 4
    assert fast._log_bytes == general._log_bytes == sum(map(len, fast._log))
    for stream in (fast, general):  # a client resumes after event 2: 3..6 are gone
        stream.detach(stream.generation)
        _, preamble = stream.attach(2, None, None)
        assert b"event: ipcwire-gap" in preamble and b'"lost":4' in preamble
        chunk, upto = stream.pending()
        assert upto == 10
        assert chunk == b"".join(_event(i, bytes([i - 1]) * 10) for i in range(7, 11))
        stream.mark_written(upto, len(chunk))
    # Attached: at most max_events unwritten; send_one refuses what has_room refuses.
    for i in range(4):
        assert fast.has_room(1, 64)
        assert fast.send_one(datas[i])
    assert not fast.has_room(1, 64)
    assert not fast.send_one(datas[0])
    chunk, upto = fast.pending()
    assert (upto, chunk.count(b"\n\n")) == (14, 4)
    fast.mark_written(upto, len(chunk))
    assert fast.send_one(datas[0])
    fast.expire("gone")
    assert not fast.send_one(datas[0])  # the general path raises ChannelBroken
    assert fast.dropped == general.dropped == 0


def test_events_sent_while_nobody_is_attached_are_dropped_oldest_first() -> None:
    stream = ServerStream(SID, max_events=3, max_bytes=1 << 20, send_limit=1000)
    stream.attach(None, None, None)
    stream.detach(stream.generation)
    for _ in range(7):
        stream.append([b"QUFB"])
    assert stream.dropped == 4 and len(stream._log) == 3
    _, preamble = stream.attach(0, None, None)
    assert b'"lost":4' in preamble
    chunk, upto = stream.pending()
    assert upto == 7 and chunk.count(b"\n\n") == 3


def test_queued_errors_and_the_received_count() -> None:
    core = _core()
    wire, _ = _stream(5)
    core.feed(wire.replace(b"-3\ndata: ", b"-3\ndata: *"))
    assert any(type(item) is Raise for item in core.queue)
    _outcome(core)
    assert core.received == 4


@pytest.mark.parametrize("size", [2000, 6000, 70_000])  # split line by line; one at a time
@pytest.mark.parametrize("name", ["usual", "crlf", "bad base64", "skipped id", "two data lines"])
def test_big_events_one_at_a_time(name: str, size: int) -> None:
    wire, payloads = _stream(6, size=size)
    if name != "usual":
        wire = UNUSUAL[name](wire)
    reference = _outcome(_ref(wire, max_frame=100_000))
    if name == "usual":
        assert reference == payloads
    for cut in range(0, len(wire) + 1, max(997, len(wire) // 60)):
        for cut2 in (cut + 5000, cut + 20000):
            core = _core(max_frame=100_000)
            assert _feed_split(core, wire, [cut, min(cut2, len(wire))]) == reference, cut


_LF_DENSE = st.lists(st.sampled_from([b"\n", b"a", b"\r"]), max_size=40).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(_LF_DENSE, st.integers(0, 45))
def test_blank_line_search_is_bytes_find(data: bytes, start: int) -> None:
    """The memchr-based search for the blank line that ends an event finds what
    ``find``/``rfind`` of ``b"\\n\\n"`` find (the inputs are dense with LFs)."""
    buf = bytearray(data)
    assert _find_blank(buf, start) == buf.find(b"\n\n", start)
    assert _rfind_blank(buf, start) == buf.rfind(b"\n\n", start)


_B64_BITS = [b"QUJD", b"A", b"+", b"/", b"=", b"\n", b" ", b"-"]
_B64ISH = st.lists(st.sampled_from(_B64_BITS), max_size=12)


@settings(max_examples=300, deadline=None)
@given(_B64ISH.map(b"".join), st.sampled_from([0, 1024, 4096]))
def test_base64_with_pybase64_accepts_and_refuses_what_binascii_does(
    tail: bytes, size: int
) -> None:
    """pybase64 (installed by the test command) decodes events of 1 KiB and more; the result
    and every refusal are binascii's strict ones, on valid data and on near misses."""
    assert _events._simd is not None
    data = binascii.b2a_base64(bytes(range(256)) * (size // 256), newline=False) + tail
    try:
        expected: bytes | None = binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        expected = None
    try:
        got: bytes | None = _events.b64decode(memoryview(data))
    except binascii.Error:
        got = None
    assert got == expected
    payload = bytes(range(256)) * (size // 256) + tail
    assert _events.b64encode(payload) == binascii.b2a_base64(payload, newline=False)


def test_an_id_with_non_ascii_digits_is_not_an_ipcwire_id() -> None:
    core = _core()
    core.feed(f"id: {SID}-²\ndata: eA==\n\n".encode())  # "²".isdigit(), but not int()
    assert _outcome(core) == [b"x"]


def test_json_that_is_not_utf_8_is_a_typed_error_in_its_place() -> None:
    """The JSON decoder raises UnicodeDecodeError for such bytes: a bare exception from
    recv() before, in an event and in a gap event's data alike."""
    core = _core(codec="json")
    core.feed(f'id: {SID}-1\ndata: "\xb2"\n\nid: {SID}-2\ndata: 2\n\n'.encode("latin-1"))
    assert _outcome(core) == [RemoteProtocolError, 2]
    core.feed(f'event: ipcwire-gap\nid: {SID}-3\ndata: {{"lost": "\xb2"}}\n\n'.encode("latin-1"))
    assert _outcome(core) == [ChannelBroken]
