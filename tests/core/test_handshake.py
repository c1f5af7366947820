"""The handshake as two endpoints talking through bytes alone (no sockets)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcwire._core.framing import make_decoder
from ipcwire._core.handshake import ClientHandshake, ServerHandshake, Step, same_secret
from ipcwire.errors import (
    AuthenticationFailed,
    HandshakeError,
    IpcwireError,
    RemoteProtocolError,
)


def _frames(data: bytes, framing: str) -> list[bytes]:
    dec = make_decoder(framing)
    dec.feed(data)
    out = []
    while (f := dec.next_frame()) is not None:
        out.append(bytes(f))
    return out


def run(client: ClientHandshake, server: ServerHandshake) -> tuple[Step, list[bytes]]:
    """Drive both ends until one finishes or fails; return the server's last step and the
    bytes that crossed the wire."""
    wire = [client.hello()]
    step = Step()
    to_server = wire[0]
    for _ in range(4):
        for frame in _frames(to_server, server.framing):
            step = server.receive(frame)
        if step.error is not None or not step.send:
            return step, wire
        wire.append(step.send)
        to_server = b""
        for frame in _frames(step.send, client.framing):
            cstep = client.receive(frame)
            if cstep.send:
                wire.append(cstep.send)
                to_server = cstep.send
            if cstep.done:
                return step, wire
        if step.done:
            return step, wire
    raise AssertionError("handshake did not finish")


def pair(
    ctoken: bytes | None, stoken: bytes | None, codec: str = "json", framing: str = "length"
) -> tuple[ClientHandshake, ServerHandshake]:
    c = ClientHandshake(codec=codec, framing=framing, max_frame=100, token=ctoken, endpoint="x")
    s = ServerHandshake(codec="json", framing=framing, max_frame=200, token=stoken, endpoint="x")
    return c, s


def test_no_token_agrees_and_learns_limits() -> None:
    c, s = pair(None, None)
    step, _ = run(c, s)
    assert step.done and c.peer_max_frame == 200 and s.peer_max_frame == 100


@pytest.mark.parametrize("framing", ["length", "ndjson"])
def test_token_is_proven_both_ways_and_never_sent(framing: str) -> None:
    c, s = pair(b"sesame", b"sesame", framing=framing)
    step, wire = run(c, s)
    assert step.done
    assert all(b"sesame" not in chunk for chunk in wire)


def test_wrong_token_fails_on_the_client_first() -> None:
    c, s = pair(b"wrong", b"sesame")
    with pytest.raises(AuthenticationFailed, match="does not know this token"):
        run(c, s)


def test_forged_client_proof_is_refused_by_the_server() -> None:
    c, s = pair(b"sesame", b"sesame")
    welcome = s.receive(_frames(c.hello(), "length")[0])
    assert welcome.send and not welcome.done
    forged = msgspec.json.encode({"proof": "00" * 32})
    step = s.receive(forged)
    assert isinstance(step.error, AuthenticationFailed)
    assert b'"code":"auth"' in step.send


def test_client_without_token_is_told_to_pass_one() -> None:
    c, s = pair(None, b"sesame")
    step, _ = run(c, s)
    assert isinstance(step.error, AuthenticationFailed)
    with pytest.raises(AuthenticationFailed, match="requires a token"):
        c.receive(_frames(step.send, "length")[0])


def test_client_with_token_refuses_a_server_that_cannot_prove_it() -> None:
    c, s = pair(b"sesame", None)
    with pytest.raises(AuthenticationFailed, match="cannot prove"):
        run(c, s)


def test_codec_mismatch_is_a_handshake_error_on_both_sides() -> None:
    c, s = pair(None, None, codec="msgpack")
    step = s.receive(_frames(c.hello(), "length")[0])
    assert isinstance(step.error, HandshakeError)
    with pytest.raises(HandshakeError, match="codec") as err:
        c.receive(_frames(step.send, "length")[0])
    # read on either side, it says whose codec is whose (it said "this server" to the client)
    assert "the client uses codec='msgpack', the server codec='json'; use the same" in str(
        err.value
    )


def test_framing_mismatch_says_which_framing_each_side_uses() -> None:
    """It said "framing differs", with neither framing nor the fix."""
    _, s = pair(None, None)
    hello = b'{"ipcwire": 1, "codec": "json", "framing": "ndjson", "max_frame": 10}'
    step = s.receive(hello)
    assert isinstance(step.error, HandshakeError)
    text = str(step.error)
    assert "the client uses framing='ndjson', the server framing='length'" in text, text
    assert "use the same framing on both sides" in text, text


def test_json_without_a_version_is_not_an_ipcwire_handshake_not_an_old_version() -> None:
    """'{}' was reported as "speaks ipcwire protocol None ...; upgrade the older side", and
    the server's error named no endpoint."""
    _, s = pair(None, None)
    step = s.receive(b"{}")
    assert isinstance(step.error, HandshakeError)
    assert "did not send an ipcwire handshake" in str(step.error)
    assert "upgrade" not in str(step.error) and step.error.endpoint == "x"
    _, s = pair(None, None)
    step = s.receive(b'{"ipcwire": 2, "codec": "json"}')
    assert isinstance(step.error, HandshakeError) and step.error.endpoint == "x"
    assert "speaks ipcwire protocol 2" in str(step.error)
    c, _ = pair(None, None)
    c.hello()
    with pytest.raises(HandshakeError, match="did not send an ipcwire handshake") as err:
        c.receive(b'{"codec": "json"}')
    assert err.value.endpoint == "x"


def test_garbage_is_a_protocol_error_not_a_crash() -> None:
    _, s = pair(None, None)
    step = s.receive(b"\xff\xfe not json")
    assert isinstance(step.error, RemoteProtocolError)
    _, s = pair(None, None)
    step = s.receive(b'{"ipcwire": "\xb2"}')  # JSON, but a string that is not UTF-8
    assert isinstance(step.error, RemoteProtocolError)
    c, _ = pair(None, None)
    c.hello()
    with pytest.raises(RemoteProtocolError):
        c.receive(b"[1, 2]")
    c, _ = pair(None, None)
    c.hello()
    with pytest.raises(RemoteProtocolError):
        c.receive(b'{"ipcwire": 1, "codec": "\xb2"}')


def test_a_proof_that_is_not_ascii_is_a_wrong_token_not_a_crash() -> None:
    # hmac.compare_digest raises TypeError for text that is not ASCII
    _, s = pair(None, b"sesame")
    assert not s.receive(msgspec.json.encode({**_GOOD, "nonce": "00" * 16})).done
    step = s.receive(b'{"proof": "\xc3\xa9"}')
    assert isinstance(step.error, AuthenticationFailed)
    c, _ = pair(b"sesame", None)
    c.hello()
    with pytest.raises(AuthenticationFailed):
        c.receive(msgspec.json.encode({**_GOOD, "proof": "é" * 64}))
    _, s = pair(None, b"sesame", framing="ndjson")
    assert isinstance(s.receive('{"token": "é"}'.encode()).error, AuthenticationFailed)


def test_same_secret_never_raises() -> None:
    assert same_secret("abc", "abc") and same_secret(b"abc", "abc") and same_secret("é", "é")
    for value in ("é", "\udcff", None, 1, ["abc"], b"ab", "abd"):
        assert not same_secret(value, "abc")


def test_ndjson_plain_token_line() -> None:
    _, s = pair(None, b"sesame", framing="ndjson")
    assert s.receive(b'{"token": "sesame"}').done
    _, s = pair(None, b"sesame", framing="ndjson")
    assert isinstance(s.receive(b'{"token": "nope"}').error, AuthenticationFailed)
    _, s = pair(None, b"sesame", framing="ndjson")
    assert isinstance(s.receive(b'{"just": "data"}').error, AuthenticationFailed)


_KEYS = ["ipcwire", "codec", "framing", "max_frame", "nonce", "proof", "token", "ok", "error"]
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from([1, "json", "length", "ndjson", "00" * 16, "é" * 64, "auth"]),
    st.lists(st.integers(), max_size=3),
)
_FIELDS = st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=4)
# A real hello or welcome (so that later states are reached too), with fields overridden.
_GOOD = {"ipcwire": 1, "codec": "json", "framing": "length", "max_frame": 100, "nonce": "00" * 16}
_MESSAGES = st.one_of(
    _FIELDS.map(msgspec.json.encode),
    _FIELDS.map(lambda d: msgspec.json.encode({**_GOOD, **d})),
    _FIELDS.map(lambda d: msgspec.json.encode({**_GOOD, "proof": "ab" * 32, **d})),
    st.binary(max_size=60),
)


@settings(max_examples=300, deadline=None)
@given(_MESSAGES, st.sampled_from([None, b"sesame"]), st.sampled_from(["length", "ndjson"]))
def test_fuzz_the_server_only_ever_answers_or_refuses(
    msg: bytes, token: bytes | None, framing: str
) -> None:
    """Whatever a client sends, in either state of the server's handshake, the server
    returns a step (a refusal is a step with an error); it never raises, which would take
    down a blocking listener's acceptor."""
    for state in ("hello", "proof"):
        s = ServerHandshake(codec="json", framing=framing, max_frame=200, token=token, endpoint="x")
        if state == "proof":
            if token is None:
                continue
            assert not s.receive(_frame_of({**_GOOD}, framing)).done  # now waits for a proof
        step = s.receive(msg)
        assert step.error is None or isinstance(step.error, IpcwireError)


@settings(max_examples=300, deadline=None)
@given(_MESSAGES, st.sampled_from([None, b"sesame"]))
def test_fuzz_the_client_only_ever_proceeds_or_raises_a_typed_error(
    msg: bytes, token: bytes | None
) -> None:
    """Whatever a server sends, in either state of the client's handshake, the client goes
    on or raises a documented ipcwire error."""
    for state in ("welcome", "result"):
        c, s = pair(token, token)
        hello = c.hello()
        if state == "result":
            if token is None:
                continue
            welcome = s.receive(_frames(hello, "length")[0]).send
            assert not c.receive(_frames(welcome, "length")[0]).done  # now waits for "ok"
        try:
            c.receive(msg)
        except IpcwireError:
            pass


def _frame_of(obj: dict[str, object], framing: str) -> bytes:
    return (
        _frames(msgspec.json.encode(obj) + b"\n", "ndjson")[0]
        if framing == "ndjson"
        else (msgspec.json.encode(obj))
    )


def test_a_deeply_nested_handshake_is_a_protocol_error_not_a_recursion_error() -> None:
    """JSON nested deeper than Python's recursion limit (a thousand ``[``) made msgspec raise
    RecursionError, which the server's receive() let through: it killed the blocking
    listener's acceptor thread (nobody was accepted again) and the client's connect()
    raised it untyped."""
    deep = b"[" * 60000
    _, s = pair(None, None)
    step = s.receive(deep)
    assert isinstance(step.error, RemoteProtocolError)
    assert b'"code":"protocol"' in step.send
    c, _ = pair(None, None)
    c.hello()
    with pytest.raises(RemoteProtocolError):
        c.receive(deep)


@pytest.mark.parametrize("version", ["true", "1.0", '"1"'])
def test_a_version_equal_to_one_in_python_but_not_the_integer_is_refused(version: str) -> None:
    """JSON's true and 1.0 compare equal to 1 in Python: both sides took them for version 1.
    They are not a version at all: a protocol error naming the member (not "speaks ipcwire
    protocol '1', this side 1")."""
    _, s = pair(None, None)
    step = s.receive(f'{{"ipcwire": {version}, "codec": "raw", "framing": "length"}}'.encode())
    assert isinstance(step.error, RemoteProtocolError)
    assert '"ipcwire" must be the protocol version, an integer (1)' in str(step.error)
    assert msgspec.json.decode(step.send[4:])["code"] == "protocol"
    c, _ = pair(None, None)
    c.hello()
    with pytest.raises(RemoteProtocolError, match='"ipcwire" must be the protocol version'):
        c.receive(f'{{"ipcwire": {version}, "max_frame": 100}}'.encode())
