"""WebSocket: ``ws://host:port/path``, ``wss://`` (TLS) and ``ws+unix:///path.sock``.

Built on the ``websockets`` library: the blocking driver uses ``websockets.sync`` (threads,
no asyncio), the asyncio driver ``websockets.asyncio``. One ipcwire message is one WebSocket
message: JSON travels in text frames (what a browser's ``JSON.parse`` wants), every other
codec in binary frames. Browsers connect with a plain ``new WebSocket(url)``; the server
checks their ``Origin`` (same origin, or the ``origins=`` allow-list).
"""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec

__all__ = ["SPEC", "SPECS", "UNIX_SPEC"]

BENCH_FRAMING = "WebSocket frame"  # ipcwire bench --list

SPEC = MechanismSpec(
    scheme="ws",
    aliases=("wss",),
    title="WebSocket",
    summary="message channel over HTTP upgrade; browsers connect natively; TLS with wss://",
    capabilities=Capabilities(
        tells_failure=True,
        bidirectional=True,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        crosses_machines=True,
        browser=True,
        platforms=("linux", "darwin", "freebsd", "win32"),
    ),
    blocking="ipcwire.ws.blocking",
    aio="ipcwire.ws.aio",
    requires=("websockets",),
    extra="web",
    docs="docs/mechanisms/websocket.md",
    example_url="ws://127.0.0.1:8765/app",
)

UNIX_SPEC = MechanismSpec(
    scheme="ws+unix",
    title="WebSocket over a Unix socket",
    summary="WebSocket on a Unix socket path (behind a reverse proxy); peer credentials",
    capabilities=Capabilities(
        tells_failure=True,
        bidirectional=True,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        peer_credentials=True,
        platforms=("linux", "darwin", "freebsd"),
    ),
    blocking="ipcwire.ws.blocking",
    aio="ipcwire.ws.aio",
    requires=("websockets",),
    extra="web",
    docs="docs/mechanisms/websocket.md",
    example_url="ws+unix:///run/user/1000/app.sock",
)

SPECS = (SPEC, UNIX_SPEC)
