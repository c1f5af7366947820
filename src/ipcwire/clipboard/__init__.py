"""The desktop clipboard: ``clipboard:``. A toy, and documented as one.

Text in, text out between processes through the clipboard the user sees: xclip or xsel on
X11, wl-copy/wl-paste on Wayland, pbcopy/pbpaste on macOS. One slot: the last writer wins, a
message overwritten before the reader looked is gone, and the user can read or replace it at
any time; change notification is by polling. Good for demos and for handing text to a human's
desktop; use anything else for processes that must talk reliably.
"""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec

__all__ = ["BENCH_TWO_WAY", "BENCH_URL", "SPEC", "probe"]

# ipcwire bench: requests on CLIPBOARD, answers on PRIMARY (``reply=``), so round trips can be
# measured the way raw/clipboard measures them; binary payloads (text=0), tight polling.
BENCH_TWO_WAY = True


def BENCH_URL(workdir: str, serial: int) -> str:
    """The address ``ipcwire bench`` measures the clipboard at."""
    return "clipboard:?reply=primary&text=0&poll_interval=0.001"


def probe() -> str | None:
    """Why there is no usable clipboard here (no display, no tool), or None."""
    from ipcwire.clipboard._tools import unavailable_reason

    return unavailable_reason()


SPEC = MechanismSpec(
    scheme="clipboard",
    query_options=("tool", "selection", "reply", "display", "text", "poll_interval", "timeout"),
    title="Desktop clipboard",
    summary="one user-visible slot, last writer wins, polled: a toy for demos",
    capabilities=Capabilities(
        bidirectional=False,  # one shared slot: a conversation would overwrite itself
        reliable=False,  # an overwritten message is lost; a repeated one is seen once
        ordered=True,  # what is seen is seen in order
        message_boundaries=True,
        needs_daemon=True,  # an X server, a Wayland compositor, or macOS's pasteboard
        multi_client=False,
        platforms=("linux", "darwin", "freebsd"),
    ),
    blocking="ipcwire.clipboard.blocking",
    aio="ipcwire.clipboard.aio",
    docs="docs/mechanisms/clipboard.md",
    example_url="clipboard:",
)
