"""``ipcwire doctor``: diagnose an endpoint, a process or the machine, with the fix spelled out.

::

    ipcwire doctor unix:///run/user/1000/app.sock   # stale? live (which pid)? EACCES? path?
    ipcwire doctor tcp://127.0.0.1:7000 --listen    # can a server start there? who holds it?
    ipcwire doctor --pid 1234                       # pipe deadlock, zombies, signals, endpoints
    ipcwire doctor --shm                            # leaked /dev/shm segments, corrupt rings
    ipcwire doctor mq:///app   |   spool:///var/spool/app
    ipcwire doctor                                  # limits, leftovers, mechanisms here

The exit status is 1 when any check found a problem, 0 otherwise (2: bad arguments).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, Final

from rich.console import Console
from rich.markup import escape

from ipcwire.cli._console import console
from ipcwire.errors import InvalidURL

if TYPE_CHECKING:
    from ipcwire.doctor import Report

__all__ = ["add_parser", "render", "run"]

_MARKS: Final = {
    "ok": "[green]✓[/]",
    "info": "[blue]·[/]",
    "warning": "[yellow]![/]",
    "problem": "[bold red]✗[/]",
}


# What diagnose() checks: keep in step with its "no checks for" message (a test compares them).
TARGETS_HELP: Final = """\
targets doctor checks:
  unix:///path.sock   and ws+unix://, http+unix://, grpc+unix:// (the socket they run over)
  tcp://host:port     and ws://, wss://, http://, https://, sse+http://, sse+https://,
                      grpc://, grpcs:// (the port they run over)
  udp://host:port     dbus://session/NAME   clipboard:
  shm://name          mq:///name            spool:///dir          fifo:///path
  /path, ./path, @name  a socket file (or abstract name) or a FIFO
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``doctor`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "doctor",
        help="diagnose sockets, ports, pipe deadlocks, leaked shared memory, queues",
        description="Each check prints what it found, the evidence and the fix. Exit status: "
        "1 when\nsomething is wrong, 0 otherwise, 2 on bad arguments. Every check: docs/doctor.md.",
        epilog=TARGETS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", nargs="?", help="a URL or a path (a socket or a FIFO), as listed "
                   "below; none: the whole machine")  # fmt: skip
    p.add_argument("--pid", type=int, action="append", default=[], metavar="PID",
                   help="diagnose a process (repeatable)")  # fmt: skip
    p.add_argument("--shm", action="store_true", help="check every /dev/shm segment and ring")
    p.add_argument("--listen", action="store_true",
                   help="diagnose for a server about to listen at TARGET")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON for tools")
    return p


def render(reports: list[Report], console: Console) -> None:
    """The reports for people."""
    for report in reports:
        verdict = "[green]ok[/]" if report.ok else f"[red]{len(report.problems)} problem(s)[/]"
        console.print(f"[bold]{escape(report.target)}[/]: {verdict}")
        for f in report.findings:
            console.print(f"  {_MARKS[f.status]} {escape(f.summary)}")
            for line in f.evidence:
                console.print(f"      {escape(line)}", style="dim")
            if f.fix:
                console.print(f"      [bold]fix:[/] {escape(f.fix)}")
        console.print()


def run(args: argparse.Namespace) -> int:
    """Run the checks asked for: 1 when any found a problem, 0 otherwise, 2 on bad input."""
    from ipcwire.doctor import check_machine, check_pid, check_shm, diagnose

    reports: list[Report] = []
    try:
        if args.target:
            reports.append(diagnose(args.target, listen=args.listen))
    except InvalidURL as exc:
        print(f"ipcwire doctor: {exc}")
        return 2
    reports += [check_pid(pid) for pid in args.pid]
    if args.shm:
        reports.append(check_shm())
    if not reports:
        reports.append(check_machine())
    ok = all(r.ok for r in reports)
    if args.json:
        print(json.dumps({"ok": ok, "reports": [r.as_dict() for r in reports]}, indent=2))
    else:
        # soft_wrap: no newline is put inside a line (a terminal still folds long ones), so a
        # fix such as "rm /dev/shm/<long name>" stays one command when saved or piped
        render(reports, console(soft_wrap=True))
    return 0 if ok else 1
