"""``--html PATH``: one self-contained page (tables, verdict, checks, machine, the plot
embedded as base64), readable offline and safe to attach to an issue."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from ipcwire.bench.report import (
    command_text,
    fmt_bandwidth,
    fmt_rate,
    fmt_us,
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

__all__ = ["render_html", "write_html"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
tr.ipcwire td:first-child{color:#1f5fa0;font-weight:bold}
tr.peer td:first-child{color:#b35900}
.no{color:#b00;font-weight:bold}.yes{color:#080}.dim{color:#888}
img{max-width:100%}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _implementation(doc: dict[str, Any]) -> str:
    """The implementation line the terminal and Markdown reports start with; a warning (in
    red) when the pure-Python fallbacks were measured."""
    line = implementation_line(doc)
    style = "no" if line.plain.startswith("WARNING") else "dim"
    return f"<p class={style}>{_e(line.plain)}</p>"


def _main_table(doc: dict[str, Any]) -> str:
    results = {(r["contender"], r["kind"], r["size"]): r for r in doc["results"]}
    cfg = doc["config"]
    rts = cfg["round_trip_sizes"]
    sizes = cfg["throughput_sizes"]
    head = ["contender", "wait", "framing"]
    idle_heads = {size: idle_column(doc, size) for size in rts}
    for size in rts:
        head += [f"round trip {format_size(size)} p50 µs"]
        if idle_heads[size] is not None:
            head += [str(idle_heads[size])]
        head += ["p99 µs", "vs raw", "vs best", "CPU µs"]
    for size in sizes:
        head += [f"{format_size(size)} rate", "bandwidth", "vs raw", "CPU µs/msg"]
    rows = ["<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for c in table_rows(doc):
        cells = [_e(c["title"]), _e(c["wait"]), _e(c["framing"])]
        for size in rts:
            r = results.get((c["id"], "round_trip", size))
            extra = [_e(idle_label(r))] if idle_heads[size] is not None else []
            if r is None:
                cells += ["", *extra] + [""] * 4
            elif r["status"] != "ok":
                cells += ["<span class=no>failed</span>", *extra] + [""] * 4
            else:
                s = r["summary"]
                lo, hi = s["p50_spread_us"]
                cells += [
                    f"{fmt_us(s['p50_us'])} <span class=dim>({fmt_us(lo)}-{fmt_us(hi)})</span>",
                    *extra,
                    p99_label(r),
                    vs_raw_label(r),
                    _x(r["vs_fastest"]),
                    fmt_us(s["cpu_us_per_msg"]),
                ]
        for size in sizes:
            r = results.get((c["id"], "throughput", size))
            if r is None:
                cells += [""] * 4
            elif r["status"] != "ok":
                cells += ["<span class=no>failed</span>"] + [""] * 3
            else:
                s = r["summary"]
                cells += [
                    fmt_rate(s["msgs_per_s"]),
                    fmt_bandwidth(s["bytes_per_s"]),
                    vs_raw_label(r),
                    fmt_us(s["cpu_us_per_msg"]),
                ]
        rows.append(
            f"<tr class={_e(c['group'])}>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>"
        )
    return "<table>" + "\n".join(rows) + "</table>"


def _checks(doc: dict[str, Any]) -> str:
    out = ["<h2>ipcwire's own targets, checked in this run</h2><table>"]
    out.append("<tr><th>target</th><th>ratio</th><th>held</th></tr>")
    for t in doc["targets"]:
        word = held_label(t)
        style = {"yes": "yes", "NO": "no"}.get(word, "dim")
        held = f"<span class={style}>{word}</span>"
        ratio = "—" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        if t.get("comparable") is False and t["ratio"] is not None:
            ratio = f"({ratio})"
        if target_marks(t):
            held += f" <span class=dim>{_e(target_marks(t))}</span>"
        if t.get("note"):
            held += f" <span class=dim>{_e(t['note'])}</span>"
        out.append(f"<tr><td>{_e(t['target'])}</td><td>{ratio}</td><td>{held}</td></tr>")
    out.append("</table><h2>Rules of thumb, checked here</h2><table>")
    out.append("<tr><th>rule</th><th>measured here</th><th>by</th><th>held</th></tr>")
    for rule in doc["rules_of_thumb"]:
        if rule["measured"] is None:
            measured, by, held = "not measured", "", "<span class=dim>—</span>"
        else:
            if rule["metric"] == "round_trip":
                measured = f"{fmt_us(rule['measured'])} µs round trip"
            else:
                measured = f"{fmt_bandwidth(rule['measured'])} at {format_size(rule['size'])}"
            by = _e(rule["by"])
            held = "<span class=yes>yes</span>" if rule["held"] else "<span class=no>no</span>"
        out.append(
            f"<tr><td>{_e(rule['rule'])}</td><td>{measured}</td><td>{by}</td><td>{held}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _floor(doc: dict[str, Any]) -> str:
    floor = doc.get("floor") or {}
    if not floor.get("available"):
        return f"<p class=dim>The machine's floor, in C: {_e(floor.get('reason', '-'))}</p>"
    rows = ["<tr><th>kind</th><th>p50 µs</th><th>p99 µs</th><th>how</th></tr>"]
    for rt in floor.get("round_trip", []):
        rows.append(
            f"<tr><td>{_e(rt['kind'])}</td><td>{fmt_us(rt['p50_us'])}</td>"
            f"<td>{fmt_us(rt['p99_us'])}</td><td>{_e(rt.get('what', ''))}</td></tr>"
        )
    for m in floor.get("memcpy", []):
        rows.append(
            f"<tr><td>memcpy</td><td></td><td></td><td>{fmt_bandwidth(m['bytes_per_s'])} at "
            f"{format_size(m['size'])}</td></tr>"
        )
    return (
        "<h2>The machine's floor, in C (no Python)</h2><p>64 B round trips between two pinned "
        "processes, from ipcwire's compiled extension.</p><table>" + "".join(rows) + "</table>"
    )


def render_html(doc: dict[str, Any], png: bytes | None = None) -> str:
    """The page as a string (``png``: the plot to embed; made here when None and matplotlib
    is installed)."""
    if png is None:
        try:
            from ipcwire.bench.plot import png_bytes

            png = png_bytes(doc)
        except ImportError:
            png = None
    img = (
        f'<img alt="benchmark plot" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        if png
        else "<p class=dim>(matplotlib is not installed: no plot)</p>"
    )
    lists = ""
    for title, key in (("Verdict", "verdict"), ("Machine", "explanations"), ("Notes", "notes")):
        if doc[key]:
            items = "".join(f"<li>{_e(line)}</li>" for line in doc[key])
            lists += f"<h2>{title}</h2><ul>{items}</ul>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ipcwire bench {_e(doc["started_at"])}</title>
<style>{_CSS}</style></head><body>
<h1>ipcwire bench</h1>
<p>ipcwire {_e(doc["ipcwire_version"])} · {_e(doc["started_at"])} ·
<code>{_e(command_text(doc["command_line"]))}</code> · {doc["elapsed_s"]:.0f} s</p>
{_implementation(doc)}
{_main_table(doc)}
<p class=dim>Round trip: p50 of each repetition, median over repetitions (min-max in
brackets). vs raw: to the contender's raw-Python baseline: for round trips time ÷ the
baseline's (lower is better), for rates rate ÷ the baseline's (higher is better). vs best:
round trip ÷ the fastest of this run (1.00x: the fastest). CPU: both processes. p99 —: a
repetition had under 100 round trips, too few for a 99th percentile. After idle (rows whose
wait policy is a choice): round trips each made after that much idle time, where the p50
beside it is back to back (a hybrid wait spins back to back and parks after idle time).</p>
{lists}
{_floor(doc)}
{_checks(doc)}
<h2>Plot</h2>
{img}
<h2>Machine</h2>
<pre>{_e(json.dumps(doc["machine"], indent=1))}</pre>
</body></html>
"""


def write_html(doc: dict[str, Any], path: Path) -> None:
    """Write the page to ``path``, whole or not at all.

    Raises:
        OSError: it could not be written (``path`` is then as it was).
    """
    write_atomically(path, render_html(doc))
