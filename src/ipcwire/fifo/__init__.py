"""Named pipes: ``fifo:///path`` (one way), ``fifo:///path?reply=/path2`` (both ways).

A FIFO is a pipe with a name in the file system: unrelated processes of the same user (file
mode 0600 by default) open it by path, and shell tools can write to it
(``echo '{"op": "reload"}' > /run/user/1000/app.fifo``). The reader creates it. Several
writers may share one FIFO; see :mod:`ipcwire.fifo._path` for the atomicity rule.
"""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec

SPEC = MechanismSpec(
    scheme="fifo",
    query_options=("reply",),
    title="Named pipe (FIFO)",
    summary="a pipe with a path: unrelated processes and shell tools; one way, or two FIFOs",
    capabilities=Capabilities(
        bidirectional=False,  # both ways only with ?reply=
        reliable=True,
        ordered=True,
        message_boundaries=True,
        multi_client=False,  # many writers share one stream; replies need one client
        platforms=("linux", "darwin", "freebsd"),
    ),
    blocking="ipcwire.fifo.blocking",
    aio="ipcwire.fifo.aio",
    docs="docs/mechanisms/fifo.md",
    example_url="fifo:///run/user/1000/app.fifo",
)


__all__ = ["SPEC"]
