"""HTTP request/reply: ``http://host:port/prefix``, ``https://...``, ``http+unix:///path.sock``.

One POST per request (the reply is the response body, content type from the codec), on an
aiohttp server and an httpx client. Clients that open a channel (the default) get the whole
channel API: ``send`` posts, ``recv`` takes the reply from the response to that post (or
from a message stream), ``close`` deletes the channel; any other HTTP client (curl, a
browser's fetch) can POST a message to the prefix and get the reply.
docs/mechanisms/rest.md has the protocol, the error mapping and the OpenAPI description.
"""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec

# ipcwire bench --list
BENCH_FRAMING = "HTTP/1.1 POST per message (batched when queued); the reply in its response"

SPEC = MechanismSpec(
    scheme="http",
    query_options=("prefix",),
    aliases=("https", "http+unix"),
    title="HTTP (REST)",
    summary="request/reply over HTTP POST (TCP or Unix socket); long-poll for server pushes; "
    "token auth, TLS, OpenAPI; curl and browsers can call it",
    capabilities=Capabilities(
        tells_failure=True,
        bidirectional=True,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        crosses_machines=True,
        browser=True,
        platforms=("linux", "darwin", "freebsd"),
    ),
    blocking="ipcwire.http.blocking",
    aio="ipcwire.http.aio",
    requires=("aiohttp", "httpx"),
    extra="web",
    docs="docs/mechanisms/rest.md",
    example_url="http://127.0.0.1:8080/ipc",
)
