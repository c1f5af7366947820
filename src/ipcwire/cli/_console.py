"""The rich console every subcommand prints with."""

from __future__ import annotations

import errno
from typing import Any

from rich.console import Console

__all__ = ["console"]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """stdout's reader went away: rich's own answer is SystemExit(1), which doctor and
        choose use for "a problem was found"; ``ipcwire.cli.main`` ends with 141 instead."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of stdout went away")


def console(**kwargs: Any) -> Console:
    """A rich Console (same arguments) whose broken pipe ends the command as SIGPIPE would."""
    return _Console(**kwargs)
