"""Server-Sent Events: ``sse+http://host:port/path`` (``sse+https://`` with TLS).

One-way, server to clients: the listener's side sends, the connecting side receives (a
browser's ``EventSource`` or ipcwire's client). Every event carries an id; a client that
reconnects with ``Last-Event-ID`` gets what it missed from a bounded per-stream replay buffer,
or an explicit ``ipcwire-gap`` event saying how many events it lost. Served by aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ipcwire.registry import Capabilities, MechanismSpec

if TYPE_CHECKING:
    from ipcwire.sse.aio import AioSseClientChannel
    from ipcwire.sse.blocking import SseClientChannel

__all__ = [
    "SPEC",
    "AioSseClientChannel",
    "SseClientChannel",
]

_CLASSES: dict[str, str] = {
    "SseClientChannel": "ipcwire.sse.blocking",
    "AioSseClientChannel": "ipcwire.sse.aio",
}


def __getattr__(name: str) -> Any:
    """The channel classes, for type checkers and ``isinstance`` narrowing (``last_event_id`` is
    its clients', not every channel's), imported on first use: the registry imports this module."""
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


BENCH_FRAMING = "SSE event: id line + data line (base64 unless JSON)"  # ipcwire bench --list

SPEC = MechanismSpec(
    scheme="sse+http",
    aliases=("sse+https",),
    title="Server-Sent Events",
    summary="event stream from a server to clients over HTTP; browsers' EventSource; resume",
    capabilities=Capabilities(
        bidirectional=False,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        crosses_machines=True,
        browser=True,
        platforms=("linux", "darwin", "freebsd", "win32"),
    ),
    blocking="ipcwire.sse.blocking",
    aio="ipcwire.sse.aio",
    requires=("aiohttp",),
    extra="web",
    docs="docs/mechanisms/sse.md",
    example_url="sse+http://127.0.0.1:8080/events",
)
