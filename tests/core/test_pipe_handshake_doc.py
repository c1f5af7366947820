"""docs/protocol.md section 3, "When there is one, and which side is the client": a child
started by ``spawn()`` gets no handshake without a token (its first bytes on stdin are the
first message, in length framing too), and with ``token=`` the parent is the client: the
first frame on the child's stdin is its hello. The child here is a plain program that
reports what it read, as a peer in another language would see it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import ipcwire

CHILD = r"""
import json, sys
head = sys.stdin.buffer.read(4)
body = sys.stdin.buffer.read(int.from_bytes(head, "big"))
out = json.dumps({"first": body.decode()}).encode()
sys.stdout.buffer.write(len(out).to_bytes(4, "big") + out)
sys.stdout.buffer.flush()
"""


def test_no_token_no_handshake_the_first_frame_is_the_message() -> None:
    with ipcwire.spawn([sys.executable, "-c", CHILD], codec="json", framing="length") as ch:
        ch.send({"n": 1})
        assert json.loads(ch.recv(timeout=10)["first"]) == {"n": 1}


KEEP_FIRST = r"""
import sys
head = sys.stdin.buffer.read(4)
body = sys.stdin.buffer.read(int.from_bytes(head, "big"))
open(sys.argv[1], "wb").write(body)
"""


def test_with_a_token_the_parent_sends_the_hello(tmp_path: Path) -> None:
    """The child, which knows no handshake, keeps the first frame and exits: the parent's
    handshake fails, and what the child read first was the parent's hello."""
    first = tmp_path / "first"
    with (
        pytest.raises(ipcwire.IpcwireError),
        ipcwire.spawn(
            [sys.executable, "-c", KEEP_FIRST, str(first)],
            codec="json",
            framing="length",
            token="t",
        ),
    ):
        pass
    hello = json.loads(first.read_bytes())
    assert {k: hello[k] for k in ("ipcwire", "codec", "framing")} == {
        "ipcwire": 1,
        "codec": "json",
        "framing": "length",
    }
    assert len(bytes.fromhex(hello["nonce"])) == 16 and "goodbye" not in hello
