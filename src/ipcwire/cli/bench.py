"""``ipcwire bench``: measure every mechanism here, beside raw Python and the peers."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ipcwire.cli._console import safe_stdio

__all__ = ["add_parser", "parse_size", "run"]

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmM]?)(?:i?B)?\s*$")


def parse_size(text: str) -> int:
    """ "64" -> 64, "4K"/"4KiB" -> 4096, "1M"/"1MiB" -> 1048576.

    Raises:
        argparse.ArgumentTypeError: not a size.
    """
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 64, 4K, 1M)")
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return int(match.group(1)) * scale


MAX_SIZE = 64 * 1024 * 1024  # ipcwire's largest message (the default max_frame)


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(parse_size(part) for part in text.split(",") if part.strip())
    for size in sizes:
        if size > MAX_SIZE:  # the C floor and the payload pools allocate a few of each
            raise argparse.ArgumentTypeError(f"{size} bytes is over 64M, ipcwire's largest message")
    return sizes


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``ipcwire bench``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="measure every mechanism here, beside raw Python and the peers",
        description=(
            "Measure round-trip latency, throughput and CPU cost of every available "
            "mechanism between two pinned processes, beside a raw-Python baseline and peer "
            "libraries measured in the same run. The full run (round trips at 64 B, 4 KiB and "
            "64 KiB; throughput up to 1 MiB; 5 repetitions) takes about half an hour with "
            "every mechanism on a 2-core machine (32 min measured; about 5 min with "
            "--mechanisms unix,tcp); --quick about a minute. Method: docs/benchmarks.md."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the short run: 64 B round trips, 64 B and 64 KiB throughput (batched variants "
        "at 64 B only), 3 repetitions, fitted into about a minute",
    )
    p.add_argument(
        "--mechanisms",
        type=_names,
        metavar="LIST",
        help="only these mechanisms, comma-separated (unix,tcp,...); peers on other "
        "mechanisms are left out too",
    )
    p.add_argument(
        "--contenders",
        type=_names,
        metavar="GLOBS",
        help="only contenders whose id matches, comma-separated globs (see --list)",
    )
    p.add_argument(
        "--api",
        choices=("blocking", "asyncio", "all"),
        default="all",
        help="which API flavours of ipcwire to measure (default: all)",
    )
    p.add_argument(
        "--sizes",
        type=_sizes,
        metavar="LIST",
        help="throughput message sizes, e.g. 64,64K,1M (quick: 64,64K; full: 64,4K,64K,1M)",
    )
    p.add_argument(
        "--rtt-sizes",
        type=_sizes,
        metavar="LIST",
        help="round-trip message sizes (quick: 64; full: 64,4K,64K)",
    )
    p.add_argument("--repeat", type=int, metavar="N", help="repetitions (quick 3, full 5)")
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="measured seconds per repetition (full 0.5; quick 0.2 shortened to fit its 50 s "
        "budget, with every mechanism about 0.04; giving it turns the budget off)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        metavar="SECONDS",
        help="warm-up per repetition (full 0.1; quick 0.05 shortened to fit its budget)",
    )
    p.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the peer libraries that are installed (default: yes)",
    )
    p.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the machine's floor in C (needs ipcwire's compiled extension)",
    )
    p.add_argument(
        "--pin",
        choices=("separate", "same", "none"),
        default="separate",
        help="pin the two processes to separate CPUs (default), the same CPU, or not at all",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write the report as JSON")
    p.add_argument("--plot", type=Path, metavar="PATH.png", help="write a PNG plot")
    p.add_argument("--html", type=Path, metavar="PATH", help="write a self-contained HTML page")
    p.add_argument("--markdown", type=Path, metavar="PATH", help="write Markdown tables")
    p.add_argument(
        "--load",
        type=Path,
        metavar="PATH",
        help="render a saved --json report instead of measuring",
    )
    p.add_argument("--list", action="store_true", help="list the contenders and exit")
    p.add_argument("--schema", action="store_true", help="print the JSON schema and exit")
    return p


def _config(args: argparse.Namespace) -> Any:
    from ipcwire.bench.runner import FULL, QUICK

    base = QUICK if args.quick else FULL
    changes: dict[str, Any] = {
        "peers": args.peers,
        "pin": args.pin,
        "floor": args.floor,
        "apis": ("blocking", "asyncio") if args.api == "all" else (args.api,),
    }
    if args.sizes:
        changes["throughput_sizes"] = args.sizes
        changes["batched_sizes"] = None  # the sizes asked for, batched too
    if args.rtt_sizes:
        changes["round_trip_sizes"] = args.rtt_sizes
    if args.repeat is not None:
        if args.repeat < 1:
            raise SystemExit("ipcwire bench: --repeat must be at least 1")
        changes["repeat"] = args.repeat
    if args.duration is not None:
        if not 0 < args.duration < math.inf:  # nan and inf too
            raise SystemExit("ipcwire bench: --duration must be a positive number of seconds")
        changes["duration"] = args.duration
    if args.warmup is not None:
        if not args.warmup < math.inf:
            raise SystemExit("ipcwire bench: --warmup must be a number of seconds")
        changes["warmup"] = max(args.warmup, 0.0)
    if args.repeat is not None or args.duration is not None or args.warmup is not None:
        changes["budget"] = None  # the user chose the length of the run
    if args.mechanisms:
        changes["mechanisms"] = args.mechanisms
    if args.contenders:
        changes["only"] = args.contenders
    return dataclasses.replace(base, **changes)


def _console() -> Any:
    from ipcwire.cli._console import console as make_console

    console = make_console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = make_console(width=200)  # a file or a pipe: do not squeeze the table
    return console


def _list(config: Any) -> int:
    from rich.table import Table

    from ipcwire.bench.runner import plan

    notes: list[str] = []
    chosen, unavailable, measurements = plan(config, notes)
    table = Table(title="contenders", title_justify="left", header_style="bold")
    for name in ("id", "title", "wait", "framing", "measurements", "after idle"):
        table.add_column(name)
    for c in chosen:
        count = sum(1 for m in measurements if m.contender is c)
        idle = sum(m.idle for m in measurements if m.contender is c)
        after = f"{idle} round trips, {config.idle_gap * 1000:g} ms apart" if idle else ""
        table.add_row(c.id, c.title, c.wait, c.framing, str(count), after)
    console = _console()
    console.print(table)
    for cid, why in unavailable.items():
        console.print(f"  {cid}: {why}")
    for note in notes:
        console.print(f"  {note}")
    return 0


def _measure(config: Any) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ipcwire.bench.analysis import build_document
    from ipcwire.bench.report import arg_text
    from ipcwire.bench.runner import run as run_bench

    err = Console(stderr=True)
    columns = (
        TextColumn("[bold]bench[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("starting the worker processes", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        with _sigterm_unwinds():
            out = run_bench(config, progress=progress)
    return build_document(out, command_line=["ipcwire", *map(arg_text, sys.argv[1:])])


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C does: the workers, a private D-Bus daemon and the
    run's directory are cleaned up on the way out instead of being left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> int:
    """Run ``ipcwire bench``; 0 on success, 1 when a measurement failed, 2 on bad input."""
    from ipcwire.bench.report import render
    from ipcwire.bench.schema import SCHEMA, validate

    if args.schema:
        print(json.dumps(SCHEMA, indent=2))
        return 0
    try:
        config = _config(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.load is None:
        from ipcwire.bench.runner import check_names

        try:
            check_names(config)
        except ValueError as exc:
            print(f"ipcwire bench: {exc}", file=sys.stderr)
            return 2
    if args.list:
        return _list(config)
    outputs = {
        flag: path
        for flag, path in (
            ("--json", args.json),
            ("--plot", args.plot),
            ("--html", args.html),
            ("--markdown", args.markdown),
        )
        if path is not None
    }
    for flag, path in outputs.items():
        why = _unwritable(path)
        if why is not None:  # found now, not after a run of half an hour
            print(f"ipcwire bench: cannot write {flag} {path}: {why}", file=sys.stderr)
            return 2
    if args.load is not None:
        try:
            doc = json.loads(args.load.read_text())
        except (OSError, ValueError) as exc:
            print(
                f"ipcwire bench: cannot read {args.load}: {exc}; --load takes the file "
                f"`ipcwire bench --json PATH` wrote",
                file=sys.stderr,
            )
            return 2
        problems = validate(doc)
        if problems:
            print(f"ipcwire bench: {args.load} is not a bench report:", file=sys.stderr)
            for line in problems[:10]:
                print(f"  {line}", file=sys.stderr)
            return 2
        from ipcwire.bench.analysis import refresh
        from ipcwire.bench.report import arg_text

        refresh(doc)
        # (a report an earlier ipcwire saved may hold lone surrogates: "\udcff")
        doc["command_line"] = [arg_text(arg) for arg in doc["command_line"]]
    else:
        try:
            doc = _measure(config)
        except ValueError as exc:
            print(f"ipcwire bench: {exc}", file=sys.stderr)
            return 2
    unwritten = _write_outputs(doc, outputs)
    render(doc, _console())
    for line in unwritten:
        print(f"ipcwire bench: {line}", file=sys.stderr)
    failed = any(r["status"] == "failed" for r in doc["results"])
    return 1 if failed or unwritten else 0


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written, or None."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        return "it is a directory"
    if not parent.is_dir():
        return f"there is no directory {parent}"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is not writable by you"
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        return f"you may not create files in {parent}"
    return None


def _write_outputs(doc: dict[str, Any], outputs: dict[str, Path]) -> list[str]:
    """Write each file asked for; what could not be written (the others still are)."""
    failed = []
    for flag, path in outputs.items():
        try:
            _write(doc, flag, path)
        except OSError as exc:
            failed.append(f"could not write {flag} {path}: {exc.strerror or exc}")
    return failed


def _write(doc: dict[str, Any], flag: str, path: Path) -> None:
    """Write one output, whole or not at all (never an empty file left by a failure)."""
    from ipcwire.bench.report import write_atomically

    if flag == "--json":
        write_atomically(path, json.dumps(doc, indent=1) + "\n")
    elif flag == "--plot":
        from ipcwire.bench.plot import png_bytes

        write_atomically(path, png_bytes(doc))
    elif flag == "--html":
        from ipcwire.bench.html import write_html

        write_html(doc, path)
    else:
        from ipcwire.bench.markdown import write_markdown

        write_markdown(doc, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m ipcwire.cli.bench``: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="ipcwire")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    safe_stdio()
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(["bench", *sys.argv[1:]]))
