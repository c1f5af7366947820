"""gRPC: ``grpc://host:port``, ``grpcs://host:port`` (TLS), ``grpc+unix:///path.sock``.

A generic bytes service on grpcio (no code generation): a channel is one bidirectional
stream (``/ipcwire.Channel/Stream``); plain gRPC clients in any language can also call the
unary method ``/ipcwire.Channel/Call`` (one request, one reply). Deadlines map onto
timeouts, status codes onto typed errors; message size limits are set on both sides; TLS
and token auth (``authorization`` metadata). docs/mechanisms/grpc.md has the details.
"""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec

# ipcwire bench --list
BENCH_FRAMING = "gRPC message on a bidirectional stream (HTTP/2 DATA), queued ones packed in one"

SPEC = MechanismSpec(
    scheme="grpc",
    query_options=("keepalive", "keepalive_timeout"),
    aliases=("grpcs", "grpc+unix"),
    title="gRPC",
    summary="bidirectional gRPC stream per channel, unary calls for any gRPC client; "
    "deadlines, status codes, TLS and token auth (grpcio)",
    capabilities=Capabilities(
        tells_failure=True,
        bidirectional=True,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        crosses_machines=True,
        platforms=("linux", "darwin", "freebsd", "win32"),
    ),
    blocking="ipcwire.grpc.blocking",
    aio="ipcwire.grpc.aio",
    requires=("grpc",),
    extra="web",
    docs="docs/mechanisms/grpc.md",
    example_url="grpc://127.0.0.1:50051",
)
