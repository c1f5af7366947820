"""This machine's numbers, read from an ``ipcwire bench --json`` report.

Only ipcwire's own rows count as evidence for a mechanism (the raw-Python baselines and the
peers are other code). A round trip is judged on its p50 at the requested message size (the
smallest measured size when that one was not measured); a throughput on the best bytes per
second of any size, batched or not.

A row whose wait policy is a choice (shm's ``spin``, ``hybrid``, ``park``) is judged on its
round trips after idle time when the report has them: measured back to back, a ``hybrid``
wait never leaves its spin phase (0.7 µs), while a latency-sensitive service that is not
saturated gets its wake-up after parking (30 µs on a VM). Its text says "after 1 ms idle".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ipcwire.advisor.questions import format_bytes_per_s, format_us
from ipcwire.errors import ConfigurationError

__all__ = ["BenchResults", "Measured", "size_text"]

Metric = Literal["round_trip", "throughput"]


def size_text(size: int) -> str:
    """``64 B``, ``4 KiB``, ``8 MiB``."""
    return _size(size)


def _size(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


@dataclass(frozen=True, slots=True)
class Measured:
    """One measured number: a round-trip p50 in µs, or a throughput in bytes per second."""

    scheme: str
    wait: str
    contender: str
    metric: Metric
    size: int
    value: float
    # the value is the p50 of round trips each made after this much idle time (µs), not of
    # round trips back to back (back_to_back: that p50, for the text)
    idle_gap_us: float | None = None
    back_to_back: float | None = None

    def text(self) -> str:
        """``round trip p50 45.2 µs at 64 B (ipcwire/unix/blocking)``; after idle time:
        ``round trip p50 30.1 µs after 1 ms idle at 64 B (back to back 0.70 µs) (...)``."""
        if self.metric == "round_trip" and self.idle_gap_us is not None:
            gap = self.idle_gap_us
            when = f"{gap / 1000:g} ms" if gap >= 1000 else f"{gap:g} µs"
            what = f"round trip p50 {format_us(self.value)} after {when} idle"
            if self.back_to_back is not None:
                return (
                    f"{what} at {_size(self.size)} (back to back "
                    f"{format_us(self.back_to_back)}) ({self.contender})"
                )
        elif self.metric == "round_trip":
            what = f"round trip p50 {format_us(self.value)}"
        else:
            # the best of every size and API measured: say which row it is
            what = f"throughput {format_bytes_per_s(self.value)} (the best row: {self.contender}"
            return f"{what}, {_size(self.size)} messages)"
        return f"{what} at {_size(self.size)} ({self.contender})"

    def meets(self, required: float) -> bool:
        """Whether this number satisfies a requirement of the same metric."""
        return self.value <= required if self.metric == "round_trip" else self.value >= required

    def as_dict(self) -> dict[str, object]:
        """Plain data for ``--json``."""
        return {
            "scheme": self.scheme,
            "wait": self.wait,
            "contender": self.contender,
            "metric": self.metric,
            "size": self.size,
            "value": self.value,
            "unit": "us" if self.metric == "round_trip" else "bytes/s",
            "after_idle_us": self.idle_gap_us,
            "back_to_back": self.back_to_back,
        }


class BenchResults:
    """The ipcwire rows of one bench report, searchable by scheme and wait policy."""

    def __init__(self, document: dict[str, Any], source: str) -> None:
        self.document = document
        self.source = source
        contenders = {c["id"]: c for c in document.get("contenders", [])}
        self.rows: list[Measured] = []
        for r in document.get("results", []):
            c = contenders.get(r.get("contender"))
            if c is None or c.get("group") != "ipcwire" or r.get("status") != "ok":
                continue
            summary = r.get("summary") or {}
            key = "p50_us" if r["kind"] == "round_trip" else "bytes_per_s"
            if key not in summary:
                continue
            idle = summary.get("idle") if r["kind"] == "round_trip" else None
            if isinstance(idle, dict) and "p50_us" in idle and "gap_us" in idle:
                # a wait-policy row: what a service that is not saturated gets
                self.rows.append(
                    Measured(c["mechanism"], c["wait"], c["id"], r["kind"], r["size"],
                             float(idle["p50_us"]), idle_gap_us=float(idle["gap_us"]),
                             back_to_back=float(summary[key]))
                )  # fmt: skip
                continue
            self.rows.append(
                Measured(c["mechanism"], c["wait"], c["id"], r["kind"], r["size"], summary[key])
            )

    @classmethod
    def load(cls, path: str | Path) -> BenchResults:
        """Read and check a report written by ``ipcwire bench --json PATH``.

        Raises:
            ConfigurationError: the file cannot be read or is not a bench report.
        """
        from ipcwire.bench import validate

        try:
            document = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read the bench results {path}: {exc}; write them with "
                f"`ipcwire bench --json {path}`"
            ) from exc
        errors = validate(document)
        if errors:
            shown = "; ".join(errors[:3])
            raise ConfigurationError(
                f"{path} is not an ipcwire bench report ({shown}); write one with "
                f"`ipcwire bench --json {path}`"
            )
        return cls(document, str(path))

    @property
    def started_at(self) -> str:
        """When the measured run started (ISO 8601), or ""."""
        return str(self.document.get("started_at", ""))

    @property
    def explanations(self) -> list[str]:
        """The report's sentences about the machine (virtual machine, pinning, load)."""
        return [str(x) for x in self.document.get("explanations", [])]

    def schemes(self) -> set[str]:
        """Schemes with at least one measurement."""
        return {m.scheme for m in self.rows}

    def _select(
        self, metric: Metric, scheme: str | None, wait: Callable[[str], bool]
    ) -> list[Measured]:
        return [
            m
            for m in self.rows
            if m.metric == metric and (scheme is None or m.scheme == scheme) and wait(m.wait)
        ]

    def round_trip(
        self, scheme: str, wait: Callable[[str], bool], size: int | None = None
    ) -> Measured | None:
        """The best round-trip p50 of ``scheme`` among rows whose wait policy passes ``wait``,
        at ``size`` (or the smallest size measured)."""
        return _best_round_trip(self._select("round_trip", scheme, wait), size)

    def throughput(self, scheme: str, wait: Callable[[str], bool]) -> Measured | None:
        """The best throughput (bytes/s, any size) of ``scheme``."""
        rows = self._select("throughput", scheme, wait)
        return max(rows, key=lambda m: m.value) if rows else None

    def best_per_mechanism(self, metric: Metric, size: int | None = None) -> list[Measured]:
        """The best row of each (scheme, wait policy), best first."""
        groups: dict[tuple[str, str], list[Measured]] = {}
        for m in self.rows:
            if m.metric == metric:
                groups.setdefault((m.scheme, m.wait), []).append(m)
        best: list[Measured] = []
        for rows in groups.values():
            found = (
                _best_round_trip(rows, size)
                if metric == "round_trip"
                else max(rows, key=lambda m: m.value)
            )
            if found is not None:
                best.append(found)
        return sorted(best, key=lambda m: m.value, reverse=metric == "throughput")


def _best_round_trip(rows: Iterable[Measured], size: int | None) -> Measured | None:
    rows = list(rows)
    if not rows:
        return None
    sizes = {m.size for m in rows}
    want = size if size in sizes else min(sizes)
    return min((m for m in rows if m.size == want), key=lambda m: m.value)
