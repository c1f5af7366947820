"""TCP: ``tcp://host:port``. Loopback by default; crosses machines when told to; TLS optional."""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec

SPEC = MechanismSpec(
    scheme="tcp",
    title="TCP",
    summary="stream socket over loopback or the network; TLS and token auth optional",
    capabilities=Capabilities(
        tells_failure=True,
        bidirectional=True,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        crosses_machines=True,
        platforms=("linux", "darwin", "freebsd", "win32"),
    ),
    blocking="ipcwire.tcp.blocking",
    aio="ipcwire.tcp.aio",
    docs="docs/mechanisms/tcp.md",
    example_url="tcp://127.0.0.1:7000",
    query_options=("keepalive",),
)
