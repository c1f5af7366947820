"""The terminal report: the table sorted by round trip, the verdict, the checks, the machine.

Everything here renders a report document (:func:`ipcwire.bench.analysis.build_document`),
so a saved ``--json`` file renders the same way later.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ipcwire.bench.runner import format_size

__all__ = [
    "arg_text",
    "command_text",
    "fmt_bandwidth",
    "fmt_rate",
    "fmt_us",
    "frame_label",
    "held_label",
    "idle_column",
    "idle_label",
    "implementation_line",
    "p99_label",
    "render",
    "table_rows",
    "target_marks",
    "vs_raw_label",
    "write_atomically",
]


def arg_text(arg: str) -> str:
    """A command-line argument as text to store and show: valid Unicode whatever the locale.

    Python decodes the bytes of an argument that are not text in its locale as lone
    surrogates (U+DC80..U+DCFF, os.fsdecode); those are the argument's bytes again, read as
    UTF-8, and each byte that is still not text is the escape ``\\xNN``: ``b\\xff/r.json``
    for the bytes b"b\\xff/r.json", ``\u00e9`` for an ``\u00e9`` typed under LC_ALL=C.
    Any other lone surrogate is ``\\udNNN``. (A report holding lone surrogates could not be
    written as UTF-8, and is no valid JSON text for other tools.)"""
    try:
        raw = arg.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return arg.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def command_text(command_line: Sequence[str]) -> str:
    """A report's command line, shown: its arguments (:func:`arg_text`) joined by spaces."""
    return " ".join(arg_text(arg) for arg in command_line)


def write_atomically(path: Path, text: str | bytes) -> None:
    """Write ``path`` whole or not at all (text as UTF-8, any lone surrogate escaped): into a
    temporary file beside it, renamed over it once written. On failure the temporary file is
    removed and ``path`` is as it was: never an empty or half-written report. A path that is
    not a regular file (/dev/stdout, a FIFO, a device) is written to directly.

    Raises:
        OSError: it could not be written.
    """
    data = text if isinstance(text, bytes) else text.encode("utf-8", "backslashreplace")
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        regular = True
    if not regular:  # a device, a FIFO, /dev/stdout: written to, never replaced
        with open(path, "wb") as f:
            f.write(data)
        return
    target = Path(os.path.realpath(path))  # (a symlink: write the file it points to)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a killed run that had this pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_STYLE = {"ipcwire": "bold cyan", "baseline": "white", "peer": "yellow"}


def fmt_us(value: float | None) -> str:
    """Microseconds, three significant digits."""
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_rate(value: float | None) -> str:
    """Messages per second: "512 k/s", "1.46 M/s"."""
    if value is None:
        return "—"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M/s"
    if value >= 1e3:
        return f"{value / 1e3:.0f} k/s"
    return f"{value:.0f}/s"


def fmt_bandwidth(value: float | None) -> str:
    """Bytes per second in decimal units: "3.27 GB/s", "412 MB/s"."""
    if value is None:
        return "—"
    if value >= 1e9:
        return f"{value / 1e9:.2f} GB/s"
    return f"{value / 1e6:.0f} MB/s"


def frame_label(c: dict[str, Any]) -> str:
    """Bytes each message carries on top of its payload: "4 B", or "var." when it depends on
    the size or on pickling (pyzmq, multiprocessing.Queue, faster-fifo)."""
    n = c.get("overhead_bytes")
    return "var." if n is None else f"{n} B"


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def vs_raw_label(r: dict[str, Any]) -> str:
    """The "vs raw" cell: "1.10x", "—", or "(665.30x)" in brackets when the two did different
    work (``vs_baseline_unequal``: shown, never read as a ratio)."""
    unequal = r.get("vs_baseline_unequal")
    if unequal:
        return f"({unequal['ratio']:.2f}x)"
    return _x(r["vs_baseline"])


def p99_label(r: dict[str, Any]) -> str:
    """A round trip's p99, or "—" when a repetition had under 100 round trips (a 99th
    percentile of 12 samples is the slowest but one, not a tail)."""
    from ipcwire.bench.analysis import tail_is_firm

    if not tail_is_firm(r, "p99"):
        return "—"
    return fmt_us(r["summary"]["p99_us"])


def idle_column(doc: dict[str, Any], size: int) -> str | None:
    """The heading of the "after idle" round-trip column at ``size`` ("after 1 ms idle:
    p50 · p99 µs"), or None when no result there measured round trips after idle time."""
    for r in doc["results"]:
        if r["kind"] == "round_trip" and r["size"] == size and r["status"] == "ok":
            idle = (r["summary"] or {}).get("idle")
            if idle:
                gap = idle["gap_us"]
                when = f"{gap / 1000:g} ms" if gap >= 1000 else f"{gap:g} µs"
                return f"after {when} idle: p50 · p99 µs"
    return None


def idle_label(r: dict[str, Any] | None) -> str:
    """A round trip's p50 and p99 after idle time ("30.1 · 249", p99 "—" when a repetition
    had under 100 of them), or "" when they were not measured."""
    if r is None or r["status"] != "ok":
        return ""
    idle = (r["summary"] or {}).get("idle")
    if not idle:
        return ""
    p99 = fmt_us(idle["p99_us"]) if idle.get("p99_firm") else "—"
    return f"{fmt_us(idle['p50_us'])} · {p99}"


def target_marks(t: dict[str, Any]) -> str:
    """What weakens a target's verdict: "(one repetition)", "(repetitions disagree)"."""
    marks = []
    if t.get("repetitions") == 1:
        marks.append("(one repetition)")
    if t.get("clear") is False:
        marks.append("(repetitions disagree)")
    return " ".join(marks)


def held_label(t: dict[str, Any]) -> str:
    """A target's verdict in words: "yes", "NO", "not measured", "not comparable"."""
    if t.get("comparable") is False:
        return "not comparable"
    if t["held"] is None:
        return "not measured"
    return "yes" if t["held"] else "NO"


def _index(doc: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(r["contender"], r["kind"], r["size"]): r for r in doc["results"]}


def table_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Contenders in table order: by round-trip p50 (first round-trip size); a contender
    without a round trip (a batched twin) right after its unbatched sibling; failed last."""
    results = _index(doc)
    rt_sizes = doc["config"]["round_trip_sizes"]
    rt = rt_sizes[0] if rt_sizes else None

    def key(c: dict[str, Any]) -> float:
        r = results.get((c["id"], "round_trip", rt)) if rt is not None else None
        if r is not None and r["summary"]:
            return float(r["summary"]["p50_us"])
        return float("inf")

    contenders = list(doc["contenders"])
    ids = {c["id"] for c in contenders}
    primary = [c for c in contenders if not (c["batched"] and c["id"].rpartition("/")[0] in ids)]
    primary.sort(key=key)
    ordered: list[dict[str, Any]] = []
    for c in primary:
        ordered.append(c)
        ordered.extend(
            x for x in contenders if x not in primary and x["id"] == c["id"] + "/batched"
        )
    ordered.extend(c for c in contenders if c not in ordered)
    return ordered


def _main_table(doc: dict[str, Any]) -> Table:
    results = _index(doc)
    cfg = doc["config"]
    rt = cfg["round_trip_sizes"][0] if cfg["round_trip_sizes"] else None
    sizes = cfg["throughput_sizes"]
    shown = sorted({sizes[0], sizes[-1]}) if sizes else []
    table = Table(
        title=f"ipcwire bench: sorted by round trip ({format_size(rt) if rt else '—'})",
        caption="wait: park (sleeps when idle) or spin; frame: bytes added per message (var.: "
        "depends on size or pickling); round trip: p50 (min-max of repetition medians), µs; "
        "vs raw: to this contender's raw-Python baseline, paired per repetition: for round "
        "trips time ÷ the baseline's (lower is better), for rates rate ÷ the baseline's (higher "
        "is better); (in brackets): not comparable, the two do different work (the verdict says "
        "why); vs best: round trip ÷ the fastest of this run (1.00x: the fastest); CPU: "
        "µs of CPU per message, both processes; p99 —: a repetition had under 100 round "
        "trips, too few for a 99th percentile; after idle (rows whose wait policy is a "
        "choice): round trips each made after that much idle time, where p50 and p99 are back "
        "to back (a hybrid wait spins back to back and parks after idle time)",
        title_justify="left",
        caption_justify="left",
        header_style="bold",
    )
    table.add_column("contender")
    table.add_column("wait")
    table.add_column("frame", justify="right")
    idle_head = idle_column(doc, rt) if rt is not None else None
    if rt is not None:
        table.add_column("p50 µs", justify="right")
        if idle_head is not None:
            table.add_column(idle_head, justify="right")
        table.add_column("p99 µs", justify="right")
        table.add_column("vs raw", justify="right")
        table.add_column("vs best", justify="right")
        table.add_column("CPU", justify="right")
    for size in shown:
        table.add_column(f"{format_size(size)} rate", justify="right")
        table.add_column("vs raw", justify="right")
        table.add_column("CPU", justify="right")
    for c in table_rows(doc):
        cells: list[Text | str] = [
            Text(c["title"], style=_STYLE.get(c["group"], "")),
            c["wait"],
            frame_label(c),
        ]
        if rt is not None:
            r = results.get((c["id"], "round_trip", rt))
            extra = [idle_label(r)] if idle_head is not None else []
            if r is None:
                cells += ["", *extra, "", "", "", ""]
            elif r["status"] != "ok":
                cells += [Text("failed", style="bold red"), *extra, "", "", "", ""]
            else:
                s = r["summary"]
                lo, hi = s["p50_spread_us"]
                cell = Text(fmt_us(s["p50_us"]))
                cell.append(f" ({fmt_us(lo)}-{fmt_us(hi)})", style="dim")
                cells += [
                    cell,
                    *extra,
                    p99_label(r),
                    vs_raw_label(r),
                    _x(r["vs_fastest"]),
                    fmt_us(s["cpu_us_per_msg"]),
                ]
        for size in shown:
            r = results.get((c["id"], "throughput", size))
            if r is None:
                cells += ["", "", ""]
            elif r["status"] != "ok":
                cells += [Text("failed", style="bold red"), "", ""]
            else:
                s = r["summary"]
                value = (
                    fmt_rate(s["msgs_per_s"]) if size < 4096 else fmt_bandwidth(s["bytes_per_s"])
                )
                cells += [value, vs_raw_label(r), fmt_us(s["cpu_us_per_msg"])]
        table.add_row(*cells)
    return table


def _size_table(doc: dict[str, Any]) -> Table:
    """Throughput at every size (shown when more than two sizes were measured)."""
    results = _index(doc)
    sizes = doc["config"]["throughput_sizes"]
    table = Table(title="throughput by message size", title_justify="left", header_style="bold")
    table.add_column("contender")
    for size in sizes:
        table.add_column(format_size(size), justify="right")
    for c in table_rows(doc):
        cells: list[Text | str] = [Text(c["title"], style=_STYLE.get(c["group"], ""))]
        for size in sizes:
            r = results.get((c["id"], "throughput", size))
            if r is None or r["status"] != "ok":
                cells.append("—" if r is None else Text("failed", style="red"))
                continue
            s = r["summary"]
            cells.append(f"{fmt_rate(s['msgs_per_s'])} · {fmt_bandwidth(s['bytes_per_s'])}")
        table.add_row(*cells)
    return table


def _round_trip_size_table(doc: dict[str, Any]) -> Table:
    """Round trips at every size (shown when more than one was measured: the main table
    has the first size only)."""
    results = _index(doc)
    sizes = doc["config"]["round_trip_sizes"]
    table = Table(
        title="round trip by message size: p50 µs (min-max), p99 µs, vs raw",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("contender")
    for size in sizes:
        table.add_column(format_size(size), justify="right")
    for c in table_rows(doc):
        cells: list[Text | str] = [Text(c["title"], style=_STYLE.get(c["group"], ""))]
        for size in sizes:
            r = results.get((c["id"], "round_trip", size))
            if r is None or r["status"] != "ok":
                cells.append("" if r is None else Text("failed", style="red"))
                continue
            s = r["summary"]
            lo, hi = s["p50_spread_us"]
            cell = Text(fmt_us(s["p50_us"]))
            cell.append(f" ({fmt_us(lo)}-{fmt_us(hi)})", style="dim")
            cell.append(f" · {p99_label(r)} · {vs_raw_label(r)}")
            cells.append(cell)
        table.add_row(*cells)
    return table


def _rules_table(doc: dict[str, Any]) -> Table:
    table = Table(title="rules of thumb, checked here", title_justify="left", header_style="bold")
    table.add_column("rule")
    table.add_column("measured here", justify="right")
    table.add_column("by")
    table.add_column("held")
    table.add_column("C floor here", justify="right")
    for rule in doc["rules_of_thumb"]:
        if rule["measured"] is None:
            measured, by, held = "not measured", "", Text("—", style="dim")
        else:
            if rule["metric"] == "round_trip":
                measured = f"{fmt_us(rule['measured'])} µs round trip"
            else:
                measured = f"{fmt_bandwidth(rule['measured'])} at {format_size(rule['size'])}"
            by = rule["by"]
            held = Text("yes", style="green") if rule["held"] else Text("no", style="red")
        table.add_row(rule["rule"], measured, by, held, _floor_cell(rule))
    return table


def _floor_cell(rule: dict[str, Any]) -> str:
    value = rule.get("floor")
    if value is None:
        return ""
    if rule.get("floor_kind") == "memcpy":
        return f"{fmt_bandwidth(value)} (memcpy)"
    return f"{fmt_us(value)} µs ({rule.get('floor_kind')})"


def _floor_table(doc: dict[str, Any]) -> Table | Text:
    floor = doc.get("floor") or {}
    if not floor.get("available"):
        reason = floor.get("reason", "not measured")
        return Text(f"the machine's floor, in C: {reason}", style="dim")
    cpus = floor.get("cpus")
    if not cpus:
        where = "two processes"
    elif cpus[0] == cpus[1]:
        where = f"two processes sharing CPU {cpus[0]}"
    else:
        where = f"two processes pinned to CPUs {cpus[0]} and {cpus[1]}"
    table = Table(
        title=f"the machine's floor, in C (no Python): 64 B round trips between {where}",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("kind")
    table.add_column("p50 µs", justify="right")
    table.add_column("p99 µs", justify="right")
    table.add_column("how")
    for rt in floor.get("round_trip", []):
        table.add_row(rt["kind"], fmt_us(rt["p50_us"]), fmt_us(rt["p99_us"]), rt.get("what", ""))
    for m in floor.get("memcpy", []):
        table.add_row(
            "memcpy", "", "", f"{fmt_bandwidth(m['bytes_per_s'])} at {format_size(m['size'])}"
        )
    return table


def _targets_table(doc: dict[str, Any]) -> Table:
    table = Table(
        title="ipcwire's own targets, checked in this run (ratio: median over repetitions of "
        "the ratio within each repetition)",
        title_justify="left",
        header_style="bold",
    )  # fmt: skip
    table.add_column("target")
    table.add_column("ratio", justify="right")
    table.add_column("per repetition", justify="right")
    table.add_column("held")
    for t in doc["targets"]:
        if t.get("comparable") is False and t["ratio"] is not None:
            lo, hi = t.get("ratio_spread") or (t["ratio"], t["ratio"])
            table.add_row(
                t["target"],
                f"({t['ratio']:.2f}x)",
                f"{lo:.2f}-{hi:.2f}",
                Text("not comparable", style="yellow"),
            )
            continue
        if t["held"] is None:
            table.add_row(t["target"], "—", "", Text("not measured", style="dim"))
            continue
        held = Text("yes", style="green") if t["held"] else Text("NO", style="bold red")
        if target_marks(t):
            held.append(f" {target_marks(t)}", style="dim")
        if t.get("note"):
            held.append(f"; {t['note']}", style="yellow")
        lo, hi = t.get("ratio_spread") or (t["ratio"], t["ratio"])
        table.add_row(t["target"], f"{t['ratio']:.2f}x", f"{lo:.2f}-{hi:.2f}", held)
    return table


def _machine_line(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    virt = m.get("virtualisation") or {}
    where = virt.get("vm") or "bare metal or undetected"
    pin = m.get("pinning") or {}
    pinned = f"pinned to CPUs {pin['cpus']}" if pin.get("cpus") else "not pinned"
    return (
        f"{m.get('cpu_model') or 'unknown CPU'}, {m.get('logical_cpus')} CPUs, "
        f"{m.get('system')} {m.get('kernel')}, {where}; {m.get('python')}; {pinned}; "
        f"ipcwire {doc['ipcwire_version']}; {doc['elapsed_s']:.0f} s"
    )


def implementation_line(doc: dict[str, Any]) -> Text:
    """Which code paths ran: "implementation: C extension (shm ring c, unix/tcp sender c)",
    or a warning when the pure-Python fallbacks were measured."""
    from ipcwire.bench.machine import implementation_warning

    impl = doc.get("implementation")
    if not impl:
        return Text("implementation: not recorded (a report from before it was)", style="dim")
    warning = implementation_warning(impl)
    if warning is not None:
        return Text(warning, style="bold red")
    return Text(
        f"implementation: C extension (shm ring {impl['shm_ring']}, unix/tcp sender "
        f"{impl['stream_sender']})",
        style="dim",
    )


def render(doc: dict[str, Any], console: Console) -> None:
    """Print the whole report."""
    console.print(implementation_line(doc))
    parts: list[Any] = [_main_table(doc)]
    if len(doc["config"]["round_trip_sizes"]) > 1:
        parts.append(_round_trip_size_table(doc))
    if len(doc["config"]["throughput_sizes"]) > 2:
        parts.append(_size_table(doc))
    console.print(Group(*parts))
    console.print(_floor_table(doc))
    if doc["verdict"]:
        console.print(Text("verdict", style="bold"))
        for line in doc["verdict"]:
            console.print(f"  {line}")
    if doc["targets"]:
        console.print(_targets_table(doc))
    console.print(_rules_table(doc))
    console.print(
        Text(
            "  latency rules are judged on the Python round trip (both directions), "
            "stricter than the one-way figures they come from",
            style="dim",
        )
    )
    console.print(Text("machine", style="bold"))
    console.print(f"  {_machine_line(doc)}")
    for line in doc["explanations"]:
        console.print(f"  {line}")
    if doc["notes"]:
        console.print(Text("notes", style="bold"))
        for line in doc["notes"]:
            console.print(f"  {line}")
