"""UDP datagrams: ``udp://host:port``. Boundaries kept; not reliable, not ordered.

Use it for telemetry, discovery and notifications where a lost message is acceptable; the
capabilities say so, and the conformance suite skips the checks that need reliability.
Messages are limited to one datagram (65507 bytes over IPv4); bigger ones are refused before
sending. Binds loopback unless told otherwise. Helpers: :func:`bind` (unconnected socket),
:func:`send_to` (fire-and-forget), :func:`pair`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ipcwire.registry import Capabilities, MechanismSpec

BENCH_FRAMING = "one datagram per message"  # ipcwire bench --list
BENCH_OVERHEAD = 0

SPEC = MechanismSpec(
    scheme="udp",
    query_options=("idle_timeout", "max_peers"),
    title="UDP",
    summary="datagrams over loopback or the network: boundaries kept, may be lost or reordered",
    capabilities=Capabilities(
        bidirectional=True,
        reliable=False,
        ordered=False,
        message_boundaries=True,
        max_message_size=65507,
        crosses_machines=True,
        platforms=("linux", "darwin", "freebsd", "win32"),
    ),
    blocking="ipcwire.udp.blocking",
    aio="ipcwire.udp.aio",
    docs="docs/mechanisms/udp.md",
    example_url="udp://127.0.0.1:9000",
)

from ipcwire.udp.blocking import UdpChannel, bind, pair, send_to  # noqa: E402 - after SPEC

if TYPE_CHECKING:
    from ipcwire.udp.aio import AioUdpChannel

__all__ = [
    "SPEC",
    "AioUdpChannel",
    "UdpChannel",
    "bind",
    "pair",
    "send_to",
]


_CLASSES: dict[str, str] = {
    "AioUdpChannel": "ipcwire.udp.aio",
}


def __getattr__(name: str) -> Any:
    """The channel classes, for type checkers and ``isinstance`` narrowing (``recv_from()``,
    ``send_to()`` are its unconnected channels', not every channel's), imported on first use:
    the registry imports this module."""
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
