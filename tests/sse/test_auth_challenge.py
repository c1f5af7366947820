"""A 401 from an SSE listener carries ``WWW-Authenticate: Bearer`` (RFC 9110, 11.6.1: a 401
must; RFC 6750, 3: ``error="invalid_token"`` when a token was given and is wrong), on the
stream's GET and on its client's DELETE, as the http mechanism's 401 does. It had none."""

from __future__ import annotations

import http.client
import urllib.parse

import ipcwire

URL = "sse+http://127.0.0.1:0/events"


def _ask(
    url: str, method: str, headers: dict[str, str], query: str = ""
) -> http.client.HTTPResponse:
    parts = urllib.parse.urlsplit(url.replace("sse+", ""))
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    conn.request(method, parts.path + query, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_a_401_names_its_scheme() -> None:
    with ipcwire.listen(URL, token="s3cret") as listener:
        for method in ("GET", "DELETE"):
            none = _ask(listener.url, method, {"X-Ipcwire-Stream": "ab" * 16})
            assert none.status == 401
            assert none.getheader("WWW-Authenticate") == 'Bearer realm="ipcwire"'
            for headers, query in (
                ({"Authorization": "Bearer nope"}, ""),
                ({}, "?token=nope"),  # (EventSource's way)
            ):
                wrong = _ask(listener.url, method, headers, query)
                assert wrong.status == 401
                assert wrong.getheader("WWW-Authenticate") == (
                    'Bearer realm="ipcwire", error="invalid_token"'
                )
        # the right token is not challenged
        good = _ask(listener.url, "DELETE", {"Authorization": "Bearer s3cret"})
        assert good.status == 400  # (no stream named)
        assert good.getheader("WWW-Authenticate") is None
