"""``ipcwire choose --measure``: a short benchmark of the mechanisms in question, right now.

It runs :func:`ipcwire.bench.run` (the same harness, workers and verification as
``ipcwire bench``) on the schemes of the candidates, plus the zero-copy mechanisms when a
latency or throughput was asked for (they are the ones that beat the rules of thumb), with
one short repetition each: a quick answer, with wider spreads than a full ``ipcwire bench``.
"""

from __future__ import annotations

from collections.abc import Iterable

from ipcwire.advisor.evidence import BenchResults
from ipcwire.advisor.questions import Answers
from ipcwire.registry import lookup, mechanisms

__all__ = ["measure", "not_measured", "schemes_to_measure"]

DURATION_S = 0.1
WARMUP_S = 0.02
THROUGHPUT_SIZE = 65536


def schemes_to_measure(answers: Answers, candidate_schemes: Iterable[str]) -> list[str]:
    """The registered schemes worth measuring for these answers (available here only)."""
    wanted = [lookup(s).scheme for s in candidate_schemes]
    if answers.latency_us is not None or answers.throughput is not None:
        wanted += [s.scheme for s in mechanisms() if s.capabilities.zero_copy]
    out: list[str] = []
    for scheme in wanted:
        if scheme not in out and lookup(scheme).unavailable_here() is None:
            out.append(scheme)
    return out


def measure(schemes: list[str], *, size: int = 64, command_line: list[str]) -> BenchResults:
    """Measure round trips at ``size`` and throughput at 64 KiB for ``schemes`` (blocking API,
    ipcwire rows only, one repetition) and return the results as bench evidence.

    Raises:
        ValueError: a size below the bench's minimum.
    """
    from ipcwire.bench import BenchConfig, build_document, run

    config = BenchConfig(
        round_trip_sizes=(size,),
        throughput_sizes=(max(size, THROUGHPUT_SIZE),),
        repeat=1,
        duration=DURATION_S,
        warmup=WARMUP_S,
        mechanisms=tuple(schemes),
        only=("ipcwire/*",),
        apis=("blocking",),
        peers=False,
        preset="choose --measure",
        budget=20.0,
    )
    document = build_document(run(config), command_line)
    return BenchResults(document, "measured now (ipcwire choose --measure)")


def not_measured(bench: BenchResults, schemes: list[str]) -> list[str]:
    """A note for each scheme asked for that has no measurement, with the bench's reason."""
    notes = [str(n) for n in bench.document.get("notes", [])]
    out = []
    for scheme in schemes:
        if scheme in bench.schemes():
            continue
        why = [n for n in notes if n.startswith(f"{scheme}:") or f"/{scheme}/" in n]
        out.append(why[0] if why else f"{scheme}: not measured (no result came back)")
    return out
