"""A codec derived from ipcwire's raw bytes codec keeps its own encode and decode.

The raw codec's fast paths (bytes sent as they are, ``bytes()`` for decoding) are taken for
ipcwire's own codec only: before, udp and blocking grpc took them for any subclass too, and
the subclass's encode or decode never ran."""

from __future__ import annotations

from typing import Any

import pytest

import ipcwire
from ipcwire._core.codecs import BytesCodec

BOUND = 10.0


class Marked(BytesCodec):
    """Raw bytes with a mark on the way out and another on the way in."""

    def encode(self, obj: Any) -> bytes:
        return bytes(obj) + b"!"

    def decode(self, data: memoryview) -> Any:
        return bytes(data) + b"?"


@pytest.mark.parametrize("url", ["udp://127.0.0.1:0", "grpc://127.0.0.1:0"])
def test_a_subclass_of_the_bytes_codec_encodes_and_decodes_its_way(url: str) -> None:
    with (
        ipcwire.listen(url, codec=Marked()) as listener,
        ipcwire.connect(listener.url, codec=Marked(), timeout=BOUND) as client,
    ):
        client.send(b"hello")
        with listener.accept(timeout=BOUND) as peer:
            assert peer.recv(timeout=BOUND) == b"hello!?"
            peer.send(b"back")
            assert client.recv(timeout=BOUND) == b"back!?"
