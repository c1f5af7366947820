"""The handshake as two endpoints talking through bytes alone (no sockets)."""

from __future__ import annotations

import msgspec
import pytest

from ipcwire._core.framing import make_decoder
from ipcwire._core.handshake import ClientHandshake, ServerHandshake, Step
from ipcwire.errors import AuthenticationFailed, HandshakeError, RemoteProtocolError


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
    with pytest.raises(HandshakeError, match="codec"):
        c.receive(_frames(step.send, "length")[0])


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


def test_ndjson_plain_token_line() -> None:
    _, s = pair(None, b"sesame", framing="ndjson")
    assert s.receive(b'{"token": "sesame"}').done
    _, s = pair(None, b"sesame", framing="ndjson")
    assert isinstance(s.receive(b'{"token": "nope"}').error, AuthenticationFailed)
    _, s = pair(None, b"sesame", framing="ndjson")
    assert isinstance(s.receive(b'{"just": "data"}').error, AuthenticationFailed)
