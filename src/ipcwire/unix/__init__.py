"""Unix domain stream sockets: ``unix:///path/app.sock`` and ``unix:@abstract-name``.

The default choice between unrelated processes on one machine: reliable, ordered, fast, with
the peer's pid/uid/gid from the kernel and file-mode permissions.
"""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec

SPEC = MechanismSpec(
    scheme="unix",
    title="Unix domain socket",
    summary="stream socket on a file path or abstract name; peer credentials; file-mode access",
    capabilities=Capabilities(
        tells_failure=True,
        bidirectional=True,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        peer_credentials=True,
        platforms=("linux", "darwin", "freebsd"),
    ),
    blocking="ipcwire.unix.blocking",
    aio="ipcwire.unix.aio",
    docs="docs/mechanisms/unix.md",
    example_url="unix:///run/user/1000/app.sock",
)
