"""An SSE event the client cannot decode is RemoteProtocolError naming the stream's URL, in
the words of every other mechanism ("(a message from URL, skipped); do both sides use
codec='json'?"), and the next event is delivered; it said "the peer sent a message that is
not valid json", with no endpoint."""

from __future__ import annotations

import pytest
from tests._codecs import JsonAsIs

import ipcwire
from ipcwire.errors import RemoteProtocolError


def test_an_undecodable_event_names_the_stream_and_is_skipped() -> None:
    with (
        ipcwire.listen("sse+http://127.0.0.1:0/ev", codec=JsonAsIs()) as lst,
        ipcwire.connect(lst.url, codec="json", timeout=10) as client,
    ):
        server = lst.accept(timeout=10)
        server.send(b"\xff{")
        server.send(b'{"ok": 1}')
        with pytest.raises(RemoteProtocolError) as err:
            client.recv(timeout=10)
        assert err.value.endpoint == client.url
        assert f"(a message from {client.url}, skipped)" in str(err.value)
        assert client.recv(timeout=10) == {"ok": 1}
        server.close()
