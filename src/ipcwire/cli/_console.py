"""The rich console every subcommand prints with, and output that never fails to encode."""

from __future__ import annotations

import codecs
import errno
import sys
from typing import Any, Final

from rich.console import Console

__all__ = ["ASCII_FOR", "ESCAPE", "console", "safe_stdio"]

ESCAPE: Final = "ipcwire.escape"

# The symbols ipcwire's output uses, for an encoding without them (ASCII).
ASCII_FOR: Final = {
    "\u00b5": "u",  # µs
    "\u00b7": "-",
    "\u2014": "--",
    "\u2013": "-",
    "\u00f7": "/",
    "\u00d7": "x",
    "\u2713": "+",
    "\u2717": "x",
    "\u00b2": "^2",
    "\u2192": "->",
    "\u2264": "<=",
    "\u2265": ">=",
    "\u2248": "~",
    "\u00b1": "+/-",
    "\u2026": "...",
    "\u25c6": "*",
    "\u2022": "*",
    "\u2500": "-",
    "\u2502": "|",
    "\u251c": "+",
    "\u2514": "+",
}


def _escape(exc: UnicodeError) -> tuple[str, int]:
    """The error handler :data:`ESCAPE`, for what the stream's encoding cannot encode: a
    symbol of ipcwire's output its ASCII stand-in (:data:`ASCII_FOR`: ``µs`` is ``us``, ✗ is
    x); a lone surrogate U+DC80..U+DCFF (how os.fsdecode keeps a byte that is not text, as in
    a file name) that byte as an escape, ``\\xff``; anything else a Python escape, ``\\xe9``,
    ``\\u65e5``."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = []
    for ch in exc.object[exc.start : exc.end]:
        cp = ord(ch)
        if ch in ASCII_FOR:
            out.append(ASCII_FOR[ch])
        elif 0xDC80 <= cp <= 0xDCFF:
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif cp <= 0xFF:
            out.append(f"\\x{cp:02x}")
        elif cp <= 0xFFFF:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    return "".join(out), exc.end


codecs.register_error(ESCAPE, _escape)


def safe_stdio() -> None:
    """Make the text streams stdout and stderr write what their encoding cannot encode as
    escapes (:data:`ESCAPE`) instead of raising UnicodeEncodeError: a check mark under an
    ASCII locale (``LC_ALL=C PYTHONUTF8=0``), a file name that is not UTF-8 (a socket bound at
    b"/tmp/\\xff.sock" shows as /tmp/\\xff.sock), whatever the locale. Binary output through
    ``sys.stdout.buffer`` (``ipcwire cat``) is untouched."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors=ESCAPE)
            except (ValueError, OSError):  # (closed, or a stream that cannot change)
                pass


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """stdout's reader went away: rich's own answer is SystemExit(1), which doctor and
        choose use for "a problem was found"; ``ipcwire.cli.main`` ends with 141 instead."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of stdout went away")


def console(**kwargs: Any) -> Console:
    """A rich Console (same arguments) whose broken pipe ends the command as SIGPIPE would."""
    return _Console(**kwargs)
