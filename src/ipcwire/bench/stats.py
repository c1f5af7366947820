"""The statistics of the benchmark: percentiles, medians of medians, spreads and ratios.

Pure functions over plain numbers, so they are tested on their own. The method
(docs/benchmarks.md): each repetition yields its own percentiles; the reported value is the
median over repetitions of that percentile, and the spread is the min and max over
repetitions, so one noisy repetition moves the spread, not the headline number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Spread",
    "median",
    "median_of_medians",
    "percentile",
    "ratio",
    "spread",
    "summarize_samples",
]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linearly interpolated.

    The same definition as numpy's default ("linear"): position ``(n - 1) * q / 100``.

    Raises:
        ValueError: no values, or ``q`` outside 0..100.
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    a = float(sorted_values[lo])
    b = float(sorted_values[hi])
    return a + (b - a) * frac


def median(values: Iterable[float]) -> float:
    """The median (the mean of the two middle values for an even count).

    Raises:
        ValueError: no values.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    return percentile(ordered, 50.0)


def median_of_medians(repetitions: Iterable[Sequence[float]]) -> float:
    """The median over repetitions of each repetition's median (empty repetitions ignored).

    Raises:
        ValueError: no repetition has any value.
    """
    medians = [median(rep) for rep in repetitions if len(rep)]
    if not medians:
        raise ValueError("median of medians of no values")
    return median(medians)


@dataclass(frozen=True, slots=True)
class Spread:
    """Minimum and maximum of per-repetition values, and their width relative to the median."""

    low: float
    high: float
    center: float

    @property
    def relative(self) -> float:
        """(high - low) / center: 0.1 means the repetitions disagreed by 10 %."""
        if self.center == 0:
            return 0.0
        return (self.high - self.low) / abs(self.center)


def spread(values: Iterable[float]) -> Spread:
    """Min, max and median of per-repetition values.

    Raises:
        ValueError: no values.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("spread of no values")
    return Spread(low=ordered[0], high=ordered[-1], center=percentile(ordered, 50.0))


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or not positive.

    The table reads it per metric: a round-trip ratio of 1.05 is 5 % slower than the
    reference; a throughput ratio of 3.0 carries three times as many messages.
    """
    if value is None or reference is None or value <= 0 or reference <= 0:
        return None
    return value / reference


def summarize_samples(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/min/max/mean of one repetition's samples.

    Raises:
        ValueError: no samples.
    """
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    return {
        "count": float(len(ordered)),
        "min": float(ordered[0]),
        "p50": percentile(ordered, 50.0),
        "p90": percentile(ordered, 90.0),
        "p99": percentile(ordered, 99.0),
        "p99_9": percentile(ordered, 99.9),
        "max": float(ordered[-1]),
        "mean": math.fsum(ordered) / len(ordered),
    }
