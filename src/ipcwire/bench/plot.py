"""``--plot PATH.png``: the report at a glance (matplotlib, Agg backend, no display needed).

Four panels, contenders in table order, coloured by group (ipcwire, raw Python, peers):
round-trip p50 with the p99 marked (only where every repetition had 100 round trips), the
p50 after idle time where it was measured and the repetitions' spread as an error bar; throughput
at the smallest and at the largest size; and either bandwidth by message size (when more than
two sizes were measured) or the CPU each round trip costs.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Final

from ipcwire.bench.analysis import tail_is_firm
from ipcwire.bench.report import idle_column, table_rows
from ipcwire.bench.runner import format_size

__all__ = ["png_bytes", "round_trip_points", "write_png"]

COLORS: Final = {"ipcwire": "#1f77b4", "baseline": "#7f7f7f", "peer": "#ff7f0e"}


def _results(doc: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {
        (r["contender"], r["kind"], r["size"]): r for r in doc["results"] if r["status"] == "ok"
    }


def _formatter(fn: Any) -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(fn)


def _bars(ax: Any, rows: list[tuple[str, str, float, Any]], xlabel: str, title: str) -> None:
    """Horizontal bars: (label, group, value, (low, high) or None)."""
    if not rows:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    ys = list(range(len(rows)))
    values = [r[2] for r in rows]
    ax.barh(ys, values, color=[COLORS.get(r[1], "#999999") for r in rows])
    for y, (_, _, _, span) in zip(ys, rows, strict=True):
        if span is not None:
            ax.plot([span[0], span[1]], [y, y], color="black", linewidth=1)
    ax.set_yticks(ys, [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_formatter(lambda v, _: f"{v:g}"))
        xlabel += " (log scale)"
    else:
        ax.set_xlim(0, max(values + [s[1] for s in (r[3] for r in rows) if s]) * 1.15)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(axis="x", which="both", alpha=0.3)
    for y, value in zip(ys, values, strict=True):
        ax.annotate(
            f" {value:.3g}", (value, y), va="center", fontsize=7, xytext=(2, 0),
            textcoords="offset points",
        )  # fmt: skip


def _floor_lines(ax: Any, doc: dict[str, Any], lowest: float) -> None:
    """Dashed lines at the C floors that fall in the plotted range (not spin: off the scale)."""
    floor = doc.get("floor") or {}
    shown: list[float] = []
    for rt in floor.get("round_trip", []) if floor.get("available") else []:
        near = any(abs(rt["p50_us"] - v) < 0.1 * v for v in shown)
        if rt["kind"] in ("unix", "pipe") and rt["p50_us"] >= lowest and not near:
            shown.append(rt["p50_us"])
            ax.axvline(rt["p50_us"], color="green", linestyle="--", linewidth=1)
            ax.annotate(
                f"C {rt['kind']} floor {rt['p50_us']:.3g}", (rt["p50_us"], 1.0),
                xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                fontsize=7, color="green",
            )  # fmt: skip


Point = tuple[int, float]  # (row, value)


def round_trip_points(
    doc: dict[str, Any], order: list[dict[str, Any]], rt: int | None
) -> tuple[list[tuple[str, str, float, Any]], list[Point], list[Point]]:
    """The round-trip panel's bars (title, group, p50, spread), its p99 marks (only where
    every repetition had 100 round trips: a p99 of 12 is the slowest but one) and its marks
    of the p50 after idle time (where measured)."""
    results = _results(doc)
    rows: list[tuple[str, str, float, Any]] = []
    p99: list[Point] = []
    idle: list[Point] = []
    for c in order:
        r = results.get((c["id"], "round_trip", rt)) if rt is not None else None
        if r is None:
            continue
        s = r["summary"]
        if tail_is_firm(r, "p99"):
            p99.append((len(rows), s["p99_us"]))
        if s.get("idle"):
            idle.append((len(rows), s["idle"]["p50_us"]))
        rows.append((c["title"], c["group"], s["p50_us"], s["p50_spread_us"]))
    return rows, p99, idle


def png_bytes(doc: dict[str, Any]) -> bytes:
    """The plot as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = _results(doc)
    order = table_rows(doc)
    cfg = doc["config"]
    rt = cfg["round_trip_sizes"][0] if cfg["round_trip_sizes"] else None
    sizes = cfg["throughput_sizes"]
    height = max(6.0, 0.28 * len(order) * 2 + 2.5)
    fig, axes = plt.subplots(2, 2, figsize=(15, height), constrained_layout=True)
    ((ax_rt, ax_small), (ax_extra, ax_large)) = axes

    rt_rows, p99, idle = round_trip_points(doc, order, rt)
    title = f"round trip {format_size(rt or 0)}: p50, ◆ p99 (where 100+ round trips each)"
    if idle:
        head = idle_column(doc, rt) if rt is not None else None
        title += f", x p50 {(head or 'after idle').split(':')[0]}"
    _bars(ax_rt, rt_rows, "µs", title)
    if rt_rows:
        marks = [v for _, v in p99 + idle]
        if p99:
            ax_rt.scatter([v for _, v in p99], [y for y, _ in p99], marker="D", s=12,
                          color="black", zorder=3)  # fmt: skip
        if idle:
            ax_rt.scatter([v for _, v in idle], [y for y, _ in idle], marker="x", s=24,
                          color="red", zorder=3)  # fmt: skip
        if ax_rt.get_xscale() == "linear" and marks:
            ax_rt.set_xlim(0, max(ax_rt.get_xlim()[1], max(marks) * 1.1))
        _floor_lines(ax_rt, doc, min(r[2] for r in rt_rows) / 2)

    def thr_rows(size: int, unit: str) -> list[tuple[str, str, float, Any]]:
        rows = []
        for c in order:
            r = results.get((c["id"], "throughput", size))
            if r is None:
                continue
            s = r["summary"]
            if unit == "msgs":
                lo, hi = s["msgs_per_s_spread"]
                rows.append((c["title"], c["group"], s["msgs_per_s"] / 1e6, (lo / 1e6, hi / 1e6)))
            else:
                lo, hi = (v * size / 1e9 for v in s["msgs_per_s_spread"])
                rows.append((c["title"], c["group"], s["bytes_per_s"] / 1e9, (lo, hi)))
        return rows

    if sizes:
        small, large = sizes[0], sizes[-1]
        _bars(ax_small, thr_rows(small, "msgs"), "million messages/s",
              f"throughput {format_size(small)}")  # fmt: skip
        _bars(ax_large, thr_rows(large, "bytes"), "GB/s",
              f"throughput {format_size(large)}")  # fmt: skip
    else:
        ax_small.set_axis_off()
        ax_large.set_axis_off()

    if len(sizes) > 2:
        for c in order:
            points = [
                (size, results[(c["id"], "throughput", size)]["summary"]["bytes_per_s"] / 1e9)
                for size in sizes
                if (c["id"], "throughput", size) in results
            ]
            if len(points) > 1:
                xs, ys = zip(*points, strict=True)
                style = "-" if c["group"] == "ipcwire" else "--"
                ax_extra.plot(xs, ys, style, marker="o", markersize=3, label=c["title"])
        ax_extra.set_xscale("log", base=2)
        ax_extra.set_yscale("log")
        ax_extra.set_xlabel("message size, bytes (log)")
        ax_extra.set_ylabel("GB/s (log)")
        ax_extra.set_title("bandwidth by message size", fontsize=10, loc="left")
        ax_extra.grid(which="both", alpha=0.3)
        ax_extra.legend(fontsize=6, ncol=2)
    else:
        cpu_rows = []
        for c in order:
            r = results.get((c["id"], "round_trip", rt)) if rt is not None else None
            if r is not None:
                s = r["summary"]
                cpu_rows.append((c["title"], c["group"], s["cpu_us_per_msg"], None))
        _bars(ax_extra, cpu_rows, "µs of CPU per round trip, both processes",
              "CPU cost per round trip (busy-polling is not free)")  # fmt: skip

    machine = doc["machine"]
    pin = (machine.get("pinning") or {}).get("mode", "none")
    fig.suptitle(
        f"ipcwire bench {doc['ipcwire_version']} · {machine.get('cpu_model')} · "
        f"{machine.get('logical_cpus')} CPUs · {machine.get('kernel')} · pinning: {pin} · "
        f"{doc['started_at']}   (blue: ipcwire, grey: raw Python, orange: peers)",
        fontsize=9,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_png(doc: dict[str, Any], path: Path) -> None:
    """Write the plot to ``path``."""
    path.write_bytes(png_bytes(doc))
