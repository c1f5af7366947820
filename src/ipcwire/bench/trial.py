"""A short trial run of chosen contenders, for the tests of whoever adds a row.

A new baseline or peer is proven the way the honesty tests prove the built-in ones: run it for
real (two worker processes, real sockets or daemons, every message verified) for a few
milliseconds, and check that each measurement finished. :func:`trial` does the run and
checks the report against the schema; the test then asserts on the rows it cares about.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ipcwire.bench.analysis import build_document
from ipcwire.bench.contender import Contender
from ipcwire.bench.runner import BenchConfig, run
from ipcwire.bench.schema import validate

__all__ = ["TrialFailed", "results_by", "trial"]


class TrialFailed(AssertionError):
    """The trial's report broke the schema, or a measurement did not finish."""


def trial(
    only: Sequence[str],
    *,
    round_trip_sizes: tuple[int, ...] = (64,),
    throughput_sizes: tuple[int, ...] = (64,),
    apis: tuple[str, ...] = ("blocking", "asyncio"),
    extra: Sequence[Contender] = (),
    check: bool = True,
) -> dict[str, Any]:
    """Run the contenders whose id matches one of ``only`` (globs) once, 10 ms of warm-up and
    50 ms measured per measurement, no floor, no peers unless named; return the JSON report.

    Raises:
        TrialFailed: the report does not match the schema, or (with ``check``) a measurement
            failed (its error and the workers' stderr are in the message).
    """
    config = BenchConfig(
        round_trip_sizes=round_trip_sizes,
        throughput_sizes=throughput_sizes,
        batched_sizes=None,
        repeat=1,
        duration=0.05,
        warmup=0.01,
        only=tuple(only),
        apis=apis,
        peers=True,
        preset="test",
        budget=None,
        floor=False,
    )
    doc = build_document(run(config, extra=extra), command_line=["trial", *only])
    problems = validate(doc)
    if problems:
        raise TrialFailed("the report does not match the schema: " + "; ".join(problems[:5]))
    if check:
        failed = [r for r in doc["results"] if r["status"] == "failed"]
        if failed:
            r = failed[0]
            raise TrialFailed(
                f"{len(failed)} measurement(s) failed; first: {r['contender']} {r['kind']} "
                f"{r['size']} B: {r['error']}\n{r['detail']}"
            )
    return doc


def results_by(doc: dict[str, Any], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The report's results keyed by the given fields (``"contender", "kind"``)."""
    return {tuple(r[k] for k in keys): r for r in doc["results"]}
