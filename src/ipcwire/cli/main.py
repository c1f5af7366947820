"""``ipcwire``: bench, choose, doctor, platforms, cat.

Each subcommand lives in its own module of this package, listed in ``SUBCOMMANDS``, and
provides ``add_parser(subparsers) -> argparse.ArgumentParser`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Final

import ipcwire
from ipcwire.cli._console import safe_stdio

__all__ = ["main"]

SUBCOMMANDS: Final = ("bench", "choose", "doctor", "platforms", "cat")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipcwire",
        description="Every way processes talk on one computer: measured, advised, diagnosed.",
    )
    parser.add_argument("--version", action="version", version=f"ipcwire {ipcwire.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what ipcwire does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"ipcwire.cli.{name}")
        sp = module.add_parser(sub)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    safe_stdio()  # no UnicodeEncodeError from our own output, whatever the locale
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        code: int = run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read stdout went away (`ipcwire doctor --json | head -1`): stop quietly, as
        # a process killed by SIGPIPE would, and keep the exit's own flush from failing too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except ipcwire.IpcwireError as exc:
        print(f"ipcwire: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
