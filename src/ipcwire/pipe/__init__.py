"""Anonymous pipes between related processes: ``pipe:``, :func:`pair` and :func:`ends`.

An anonymous pipe has no name: one process makes it and hands the ends to the processes it
starts. ipcwire gives you the ends as :class:`PipeEnd` objects (close-on-exec fds, picklable
for ``multiprocessing``) and turns each into a channel with :meth:`PipeEnd.open`. In a child
started with ``subprocess`` (``pass_fds=end.fds``), ``ipcwire.connect(end.url)`` opens the
channel. ``ipcwire.spawn()`` and ``ipcwire.stdio()`` (a child's stdin/stdout) are the same
mechanism and share these capabilities.
"""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec

SPEC = MechanismSpec(
    scheme="pipe",
    query_options=("role", "rfd", "wfd"),
    title="Anonymous pipe",
    summary="kernel pipes between related processes (fork, subprocess, spawn/stdio); "
    "one-way or two pipes for both ways",
    capabilities=Capabilities(
        bidirectional=True,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        multi_client=False,
        platforms=("linux", "darwin", "freebsd"),
    ),
    blocking="ipcwire.pipe.blocking",
    aio="ipcwire.pipe.aio",
    docs="docs/mechanisms/pipe.md",
    example_url="pipe:?rfd=5&wfd=8",
)

from ipcwire.pipe._ends import PipeEnd, ends, pair  # noqa: E402 - after SPEC, on purpose

__all__ = ["SPEC", "PipeEnd", "ends", "pair"]
