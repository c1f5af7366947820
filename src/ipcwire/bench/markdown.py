"""``--markdown PATH``: the report as Markdown tables, for BENCHMARKS.md and issues."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ipcwire.bench.report import (
    command_text,
    fmt_bandwidth,
    fmt_rate,
    fmt_us,
    frame_label,
    held_label,
    idle_column,
    idle_label,
    implementation_line,
    p99_label,
    table_rows,
    target_marks,
    vs_raw_label,
    write_atomically,
)
from ipcwire.bench.runner import format_size

__all__ = ["render_markdown", "write_markdown"]


LEGEND = (
    "Reading the ratios: in the round-trip columns, *vs raw* is this contender's time ÷ its "
    "raw-Python baseline's, paired per repetition (lower is better; 1.00x: as fast), and *vs "
    "best* its time ÷ the fastest round trip of the run (1.00x: the fastest); in the rate "
    "columns, *vs raw* is its rate ÷ the baseline's (higher is better). A ratio in brackets is "
    "not comparable: the two did different work (the verdict says why). CPU: µs of CPU per "
    "message, both processes. p99 —: a repetition had under 100 round trips, too few for a "
    "99th percentile. *after idle* (rows whose wait policy is a choice): round trips each made "
    "after that much idle time, where the p50 beside it is back to back (a hybrid wait spins "
    "back to back and parks after idle time)."
)


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _main(doc: dict[str, Any]) -> list[str]:
    results = {(r["contender"], r["kind"], r["size"]): r for r in doc["results"]}
    cfg = doc["config"]
    rts = cfg["round_trip_sizes"]
    sizes = cfg["throughput_sizes"]
    head = ["contender", "wait", "frame"]
    idle_heads = {size: idle_column(doc, size) for size in rts}
    for size in rts:
        head += [f"RT {format_size(size)} p50 µs (min-max)"]
        if idle_heads[size] is not None:
            head += [str(idle_heads[size])]
        head += ["p99 µs", "vs raw", "vs best", "CPU µs/RT"]
    for size in sizes:
        head += [f"{format_size(size)} rate", "vs raw", "CPU µs/msg"]
    lines = [_row(head), _row(["---"] * 2 + ["---:"] * (len(head) - 2))]
    for c in table_rows(doc):
        name = f"**{c['title']}**" if c["group"] == "ipcwire" else c["title"]
        cells = [name, c["wait"], frame_label(c)]
        for size in rts:
            r = results.get((c["id"], "round_trip", size))
            extra = [idle_label(r)] if idle_heads[size] is not None else []
            if r is None:
                cells += ["", *extra] + [""] * 4
            elif r["status"] != "ok":
                cells += ["failed", *extra] + [""] * 4
            else:
                s = r["summary"]
                lo, hi = s["p50_spread_us"]
                cells += [
                    f"{fmt_us(s['p50_us'])} ({fmt_us(lo)}-{fmt_us(hi)})",
                    *extra,
                    p99_label(r),
                    vs_raw_label(r),
                    _x(r["vs_fastest"]),
                    fmt_us(s["cpu_us_per_msg"]),
                ]
        for size in sizes:
            r = results.get((c["id"], "throughput", size))
            if r is None:
                cells += [""] * 3
            elif r["status"] != "ok":
                cells += ["failed", "", ""]
            else:
                s = r["summary"]
                rate = fmt_rate(s["msgs_per_s"]) if size < 4096 else fmt_bandwidth(s["bytes_per_s"])
                cells += [rate, vs_raw_label(r), fmt_us(s["cpu_us_per_msg"])]
        lines.append(_row(cells))
    return lines


def render_markdown(doc: dict[str, Any]) -> str:
    """The report as Markdown."""
    m = doc["machine"]
    virt = (m.get("virtualisation") or {}).get("vm") or "not detected"
    idle = m.get("cpuidle") or {}
    poll = (idle.get("guest_halt_poll") or {}).get("guest_halt_poll_ns")
    pin = m.get("pinning") or {}
    out = [
        f"Command: `{command_text(doc['command_line'])}` · ipcwire {doc['ipcwire_version']} · "
        f"{doc['started_at']} · {doc['elapsed_s']:.0f} s",
        "",
        f"Machine: {m.get('cpu_model')}, {m.get('logical_cpus')} CPUs, {m.get('system')} "
        f"{m.get('kernel')}, virtualisation: {virt}, cpuidle: {idle.get('driver')} "
        f"(guest_halt_poll_ns={poll}), {m.get('python')}, pinning: {pin.get('mode')} "
        f"{pin.get('cpus') or ''}, load average before the run: "
        f"{', '.join(f'{v:.2f}' for v in m.get('load_average') or [])}, after: "
        f"{', '.join(f'{v:.2f}' for v in m.get('load_average_after') or [])}",
        "",
        implementation_line(doc).plain,
        "",
        *_main(doc),
        "",
        LEGEND,
        "",
    ]
    floor = doc.get("floor") or {}
    if floor.get("available"):
        out += ["The machine's floor in C (64 B round trips, two pinned processes): "
                + ", ".join(f"{rt['kind']} {fmt_us(rt['p50_us'])} µs"
                            for rt in floor["round_trip"])
                + "; memcpy "
                + ", ".join(f"{fmt_bandwidth(x['bytes_per_s'])} at {format_size(x['size'])}"
                            for x in floor["memcpy"]) + ".", ""]  # fmt: skip
    if doc["verdict"]:
        out += ["Verdict:", "", *[f"- {line.strip()}" for line in doc["verdict"]], ""]
    if doc["targets"]:
        out += [
            _row(["ipcwire target", "ratio", "per repetition", "held"]),
            _row(["---", "---:", "---:", "---"]),
        ]
        for t in doc["targets"]:
            held = held_label(t).replace("NO", "**NO**")
            if target_marks(t):
                held += f" {target_marks(t)}"
            if t.get("note"):
                held += f"; {t['note']}"
            spread = t.get("ratio_spread")
            per_rep = f"{spread[0]:.2f}-{spread[1]:.2f}" if spread else ""
            ratio = _x(t["ratio"])
            if t.get("comparable") is False and t["ratio"] is not None:
                ratio = f"({ratio})"
            out.append(_row([t["target"], ratio, per_rep, held]))
        out.append("")
    out += [_row(["rule of thumb", "measured here", "by", "held", "C floor here"]),
            _row(["---", "---:", "---", "---", "---:"])]  # fmt: skip
    for rule in doc["rules_of_thumb"]:
        if rule["measured"] is None:
            out.append(_row([rule["rule"], "not measured", "", "—", ""]))
            continue
        if rule["metric"] == "round_trip":
            measured = f"{fmt_us(rule['measured'])} µs"
        else:
            measured = f"{fmt_bandwidth(rule['measured'])} at {format_size(rule['size'])}"
        floor_value = rule.get("floor")
        floor_cell = ""
        if floor_value is not None:
            floor_cell = (
                fmt_bandwidth(floor_value)
                if rule.get("floor_kind") == "memcpy"
                else f"{fmt_us(floor_value)} µs"
            )
        held = "yes" if rule["held"] else "no"
        out.append(_row([rule["rule"], measured, f"`{rule['by']}`", held, floor_cell]))
    out.append("")
    if doc["notes"]:
        out += ["Notes:", "", *[f"- {n}" for n in doc["notes"]], ""]
    return "\n".join(out)


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    """Write the Markdown report to ``path``, whole or not at all.

    Raises:
        OSError: it could not be written (``path`` is then as it was).
    """
    write_atomically(path, render_markdown(doc))
