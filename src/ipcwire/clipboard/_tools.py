"""The clipboard tools: which one to use here, and how to run it (no waiting logic here).

X11: xclip or xsel (``DISPLAY``); Wayland: wl-copy/wl-paste (``WAYLAND_DISPLAY``); macOS:
pbcopy/pbpaste. Copy tools on X11 and Wayland fork a process that keeps serving the content
until someone else copies (that is how those clipboards work), so a copy is only "done" once a
paste returns it: :func:`copy_verified` checks.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ipcwire.errors import ChannelBroken, ConfigurationError, MechanismUnavailable, Timeout

__all__ = [
    "TOOL_TIMEOUT",
    "Tool",
    "pick_tool",
    "tool_failed",
    "tool_limit",
    "tool_timed_out",
    "unavailable_reason",
]

TOOL_TIMEOUT: Final = 10.0  # a clipboard owner that does not answer within this is broken
MIN_TOOL_TIME: Final = 0.25  # what a tool run gets even when the caller's time is up
INSTALL_HINT = "install xclip (apt install xclip) or xsel for X11, wl-clipboard for Wayland"


@dataclass(frozen=True, slots=True)
class Tool:
    """A pair of commands: ``copy`` reads stdin, ``paste`` writes the content to stdout."""

    name: str
    copy: tuple[str, ...]
    paste: tuple[str, ...]
    env: Mapping[str, str]

    def describe(self) -> str:
        where = self.env.get("WAYLAND_DISPLAY") or self.env.get("DISPLAY") or "this desktop"
        return f"{self.name} on {where}"


def tool_failed(tool: Tool, what: str, detail: str, url: str) -> ChannelBroken:
    """The error for a run of ``tool`` that failed to ``what`` ("read", "write") the clipboard."""
    return ChannelBroken(
        f"{url}: {tool.name} failed to {what} the clipboard ({tool.describe()}): "
        f"{detail.strip() or 'no error message'}",
        endpoint=url,
    )


def tool_limit(deadline: float | None, now: float) -> tuple[float, bool]:
    """How long a tool run may take before a caller's ``deadline`` (on the clock that gave
    ``now``), and whether that deadline (not :data:`TOOL_TIMEOUT`) is what limits it."""
    if deadline is None or deadline - now >= TOOL_TIMEOUT:
        return TOOL_TIMEOUT, False
    return max(deadline - now, MIN_TOOL_TIME), True


def tool_timed_out(tool: Tool, what: str, url: str) -> Timeout:
    """The error for a run of ``tool`` cut short by the caller's timeout."""
    return Timeout(
        f"{url}: {tool.name} did not {what} the clipboard in time ({tool.describe()}; is the "
        f"display answering?)",
        endpoint=url,
    )


def _tools(selection: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], str]]:
    primary = selection == "primary"
    wl = ("--primary",) if primary else ()
    return {
        "wl-clipboard": (("wl-copy", *wl), ("wl-paste", "--no-newline", *wl), "WAYLAND_DISPLAY"),
        "xclip": (
            ("xclip", "-selection", selection, "-i"),
            ("xclip", "-selection", selection, "-o"),
            "DISPLAY",
        ),
        "xsel": (
            ("xsel", f"--{selection}", "--input"),
            ("xsel", f"--{selection}", "--output"),
            "DISPLAY",
        ),
        "pbcopy": (("pbcopy",), ("pbpaste",), ""),
    }


def pick_tool(
    tool: str | None = None, *, selection: str = "clipboard", display: str | None = None
) -> Tool:
    """The tool to use: ``tool`` if given, else the first that fits this session.

    Raises:
        MechanismUnavailable: no display, or no tool installed (with the install hint).
        ConfigurationError: an unknown tool or selection.
    """
    if selection not in ("clipboard", "primary"):
        raise ConfigurationError("selection must be 'clipboard' or 'primary'")
    env = dict(os.environ)
    if display is not None:
        env["WAYLAND_DISPLAY" if display.startswith("wayland") else "DISPLAY"] = display
    table = _tools(selection)
    if tool is not None:
        if tool not in table:
            raise ConfigurationError(f"unknown clipboard tool {tool!r}; use one of {list(table)}")
        order = [tool]
    elif sys.platform == "darwin":
        order = ["pbcopy"]
    else:
        order = ["wl-clipboard", "xclip", "xsel"]
    missing = []
    for name in order:
        copy, paste, needs = table[name]
        if needs and not env.get(needs):
            missing.append(f"{name} needs {needs}")
            continue
        if shutil.which(copy[0]) is None or shutil.which(paste[0]) is None:
            missing.append(f"{name} is not installed")
            continue
        return Tool(name=name, copy=copy, paste=paste, env=env)
    raise MechanismUnavailable(
        "no clipboard here: " + "; ".join(missing) + f". Run inside a desktop session (or "
        f"Xvfb), and {INSTALL_HINT}"
    )


def unavailable_reason() -> str | None:
    """Why the clipboard cannot be used here, or None."""
    try:
        pick_tool()
    except MechanismUnavailable as exc:
        return str(exc)
    return None
