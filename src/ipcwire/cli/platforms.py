"""``ipcwire platforms``: which mechanisms work on this machine, and why not."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from ipcwire.registry import MechanismSpec, mechanisms

__all__ = ["add_parser", "collect", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "platforms", help="which mechanisms work here, and why not"
    )
    p.add_argument("--json", action="store_true", help="print JSON for tools")
    return p


def _row(spec: MechanismSpec) -> dict[str, Any]:
    reason = spec.unavailable_reason()
    return {
        "scheme": spec.scheme,
        "aliases": list(spec.aliases),
        "title": spec.title,
        "available": reason is None,
        "reason": reason,
        "asyncio": spec.aio is not None,
        "capabilities": spec.capabilities.as_dict(),
        "example": spec.example_url,
    }


def collect() -> dict[str, Any]:
    """Everything ``ipcwire platforms`` reports, as plain data."""
    return {"platform": sys.platform, "mechanisms": [_row(s) for s in mechanisms()]}


def run(args: argparse.Namespace) -> int:
    data = collect()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    table = Table(title=f"ipcwire mechanisms on {data['platform']}")
    for col in (
        "scheme",
        "mechanism",
        "here",
        "both ways",
        "reliable",
        "crosses machines",
        "why not",
    ):
        table.add_column(col)
    for m in data["mechanisms"]:
        caps = m["capabilities"]
        table.add_row(
            m["scheme"] + "://",
            m["title"],
            "[green]yes[/]" if m["available"] else "[red]no[/]",
            "yes" if caps["bidirectional"] else "one-way",
            "yes" if caps["reliable"] else "no",
            "yes" if caps["crosses_machines"] else "no",
            m["reason"] or "",
        )
    Console().print(table)
    return 0
