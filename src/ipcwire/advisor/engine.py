"""The engine of ``ipcwire choose``: the rule table, read with the registry and the numbers.

1. Every rule of :data:`~ipcwire.advisor.rules.RULES` is tried in order against the answers.
   A rule that applies offers its picks; a pick is kept only when its scheme is registered,
   runs on the target OS (and is available here when the target is this machine), and has
   the capabilities the answers require (:data:`~ipcwire.advisor.rules.REQUIREMENTS`, read
   from the registry). Every skip is kept with its reason (the checks and each pick's URL and
   caveats: ``picks.py``).
2. With bench results, each kept pick gets its measured numbers. A rule that promised a number
   ("under 10 µs") and was measured short of it gives a warning. When the answers ask for a
   latency or a throughput, picks measured to reach it go first (a mechanism that reached it
   in the measurements, though no rule named it, too); the rest keep the rules' order, an
   unmeasured pick never ahead of the rules' answer (a note says how to measure it). A round
   trip asked of a one-way mechanism does not apply to it (it is not demoted for it); every
   part of a combined pick is judged; a note says when the numbers changed the order.
3. The first pick is the recommendation, the second the runner-up. When nothing survives, a
   warning names the requirement that leaves the fewest mechanisms, what those lack of the
   rest, and the flags to drop (or, for durable messages, a broker outside ipcwire).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ipcwire.advisor.evidence import BenchResults, Measured, size_text
from ipcwire.advisor.picks import Considered, because_text, caveats_for, consider, no_driver
from ipcwire.advisor.questions import QUESTIONS, Answers, describe_value
from ipcwire.advisor.rules import REQUIREMENTS, RULES, Condition, Pick, Requirement, Rule, holds
from ipcwire.errors import InvalidURL
from ipcwire.registry import MechanismSpec, lookup, mechanisms

__all__ = [
    "Advice",
    "Candidate",
    "Claim",
    "Considered",
    "Step",
    "advise",
    "condition_text",
    "no_driver",
]

_LABELS = {q.key: q.label for q in QUESTIONS}


def condition_text(cond: Condition) -> str:
    """``round trip <= 10.0 µs``, ``browser = server-to-client``."""
    return f"{_LABELS[cond.key]} {cond.op} {describe_value(cond.key, cond.value)}"


@dataclass(slots=True)
class Step:
    """One rule tried: ``failed`` is its first condition that does not hold (None: applies)."""

    rule: Rule
    failed: Condition | None
    considered: list[Considered] = field(default_factory=list)

    def text(self, answers: Answers) -> str:
        """One line for the path through the rules."""
        if self.failed is not None:
            key = self.failed.key
            return (
                f"{self.rule.id}: no: {_LABELS[key]} is {answers.describe(key)} "
                f"(the rule needs {condition_text(self.failed)})"
            )
        conds = ", ".join(condition_text(c) for c in self.rule.when) or "always"
        return f"{self.rule.id}: yes ({conds})"


@dataclass(slots=True)
class Claim:
    """A measured number behind a candidate, against what was asked (``required``)."""

    measured: Measured
    required: float | None = None
    size: int | None = None  # the round-trip message size asked for (--size)

    @property
    def meets(self) -> bool | None:
        """Whether the number satisfies the requirement (None: nothing was required)."""
        return None if self.required is None else self.measured.meets(self.required)

    def text(self) -> str:
        """``round trip p50 45.2 µs at 64 B (...): over the 10 µs asked for``."""
        out = self.measured.text()
        m = self.measured
        if m.metric == "round_trip" and self.size is not None and m.size != self.size:
            out += (
                f" (no {size_text(self.size)} round trip in these numbers: judged at "
                f"{size_text(m.size)})"
            )
        if self.required is None:
            return out
        key = "latency_us" if self.measured.metric == "round_trip" else "throughput"
        asked = describe_value(key, self.required)
        if self.meets:
            return f"{out}: meets the {asked} asked for"
        side = "over" if self.measured.metric == "round_trip" else "under"
        return f"{out}: {side} the {asked} asked for"


@dataclass(slots=True)
class Candidate:
    """A mechanism that survived: from a rule, or (``rule`` None) from the measurements."""

    pick: Pick
    title: str
    url: str
    rule: Rule | None
    because: str
    claims: list[Claim] = field(default_factory=list)
    # what was asked that cannot apply to it (a round trip of a one-way mechanism): why
    not_applicable: list[str] = field(default_factory=list)
    # what the user must add for the situation asked about (TLS and a token across machines)
    caveats: list[str] = field(default_factory=list)

    @property
    def meets(self) -> bool | None:
        """False when any measured number misses what was asked; True when all that were
        asked are measured and met (or cannot apply to it); None otherwise."""
        results = [c.meets for c in self.claims if c.meets is not None]
        results += [True] * len(self.not_applicable)
        if False in results:
            return False
        return True if results else None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "scheme": self.pick.scheme,
            "also": list(self.pick.also),
            "wait": self.pick.wait,
            "per_direction": self.pick.per_direction,
            "title": self.title,
            "url": self.url,
            "how": self.pick.how,
            "rule": self.rule.id if self.rule else None,
            "because": self.because,
            "meets_requirements": self.meets,
            "not_applicable": list(self.not_applicable),
            "caveats": list(self.caveats),
            "measured": [
                {**c.measured.as_dict(), "required": c.required, "meets": c.meets, "text": c.text()}
                for c in self.claims
            ],
        }


@dataclass(slots=True)
class Advice:
    """What ``ipcwire choose`` answers: the recommendation, the runner-up, and why."""

    answers: Answers
    recommended: Candidate | None
    runner_up: Candidate | None
    steps: list[Step]
    path_length: int
    candidates: list[Candidate]
    warnings: list[str]
    notes: list[str]
    bench: BenchResults | None

    @property
    def path(self) -> list[Step]:
        """The rules tried up to the one that gave the answer."""
        return self.steps[: self.path_length]

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "answers": self.answers.as_dict(),
            "recommended": self.recommended.as_dict() if self.recommended else None,
            "runner_up": self.runner_up.as_dict() if self.runner_up else None,
            "others": [c.as_dict() for c in self.candidates[2:]],
            "path": [
                {
                    "rule": s.rule.id,
                    "applies": s.failed is None,
                    "text": s.text(self.answers),
                    "because": s.rule.because if s.failed is None else None,
                    "considered": [
                        {"pick": c.pick.label, "url": c.url, "title": c.title, "skipped": c.skipped}
                        for c in s.considered
                    ],
                }
                for s in self.path
            ],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "bench": None
            if self.bench is None
            else {"source": self.bench.source, "started_at": self.bench.started_at},
        }


# -- numbers ------------------------------------------------------------------------------------
def _wait_filter(pick: Pick, answers: Answers) -> Callable[[str], bool]:
    if pick.wait is not None:
        return lambda w: w == pick.wait
    if answers.idle_sleep:
        return lambda w: w != "spin"
    return lambda w: True


def _claims(cand: Candidate, answers: Answers, bench: BenchResults, size: int) -> list[Claim]:
    """The numbers of every part of the pick (``pipe + sse+http``: both), judged against what
    was asked; a round trip asked of a one-way part goes to ``cand.not_applicable``."""
    out = []
    cand.not_applicable = []
    for i, name in enumerate((cand.pick.scheme, *cand.pick.also)):
        spec = lookup(name)
        wait = _wait_filter(cand.pick if i == 0 else Pick(name), answers)
        one_way = not spec.capabilities.bidirectional and not cand.pick.per_direction
        rt = None if one_way else bench.round_trip(spec.scheme, wait, size)
        if rt is not None:
            out.append(Claim(rt, answers.latency_us, size))
        elif one_way and answers.latency_us is not None:
            cand.not_applicable.append(
                f"round trip: {spec.title} is one-way (it has no round trip to measure)"
            )
        bw = bench.throughput(spec.scheme, wait)
        if bw is not None:
            out.append(Claim(bw, answers.throughput))
    return out


def _promised(rule: Rule | None) -> list[tuple[str, float]]:
    """The numbers a rule promises its first pick reaches (its numeric conditions)."""
    if rule is None:
        return []
    return [
        (c.key, float(c.value))
        for c in rule.when
        if c.op in ("<=", ">=") and isinstance(c.value, int | float)
    ]


def _contradictions(cands: list[Candidate]) -> list[str]:
    out = []
    for cand in cands:
        if cand.rule is None or cand.pick != cand.rule.picks[0]:
            continue
        for key, limit in _promised(cand.rule):
            metric = "round_trip" if key == "latency_us" else "throughput"
            for claim in cand.claims:
                m = claim.measured
                if m.metric == metric and not m.meets(limit):
                    quote = f"\u201c{cand.rule.because}\u201d"
                    side = "under" if metric == "round_trip" else "over"
                    out.append(
                        f"The rule of thumb behind {cand.rule.id} ({quote}) does not hold on "
                        f"this machine: {cand.pick.label} measured {m.text()}, not {side} "
                        f"{describe_value(key, limit)}."
                    )
    return out


def _from_measurements(
    answers: Answers, bench: BenchResults, size: int, known: list[Candidate], warnings: list[str]
) -> list[Candidate]:
    """Mechanisms the numbers say reach what was asked, though no applying rule named them."""
    asked = [
        (metric, req)
        for metric, req in (("round_trip", answers.latency_us), ("throughput", answers.throughput))
        if req is not None
    ]
    if not asked:
        return []
    fits: dict[tuple[str, str], list[Measured]] = {}
    for metric, req in asked:
        for m in bench.best_per_mechanism("round_trip" if metric == "round_trip" else "throughput",
                                          size):  # fmt: skip
            if m.meets(req):
                fits.setdefault((m.scheme, m.wait), []).append(m)
    found = []
    for (scheme, wait), rows in fits.items():
        if len(rows) != len(asked):
            continue  # reaches one number asked for but not the other
        try:
            spec = lookup(scheme)
        except InvalidURL:
            continue  # measured on a machine whose ipcwire had it; not registered here
        pick = Pick(scheme, wait=wait if wait in spec.capabilities.wait_policies else None)
        if any(c.pick.scheme == pick.scheme and c.pick.wait == pick.wait for c in known):
            continue
        seen = consider(pick, answers)
        text = "; ".join(m.text() for m in rows)
        if seen.skipped is not None:
            if pick.spins and answers.idle_sleep:
                warnings.append(
                    f"On this machine only {pick.label} reached what you asked for ({text}), "
                    f"and it keeps a core busy while waiting, while the answer must sleep when "
                    f"idle (--idle-sleep yes, the default). Relax the requirement, or allow "
                    f"spinning (--idle-sleep no)."
                )
            continue
        cand = Candidate(
            pick, seen.title, seen.url, None, because_text(f"measured here: {text}", pick, answers)
        )
        cand.caveats = caveats_for(pick, answers)
        cand.claims = _claims(cand, answers, bench, size)
        found.append(cand)
    return sorted(found, key=lambda c: [cl.measured.value for cl in c.claims][:1])


def _reordered(first: Candidate, rules_first: Candidate) -> str:
    """Why the measurements put ``first`` ahead of the rules' first choice."""
    met = "; ".join(c.text() for c in first.claims if c.meets) or "what was asked"
    missed = [c.text() for c in rules_first.claims if c.meets is False]
    if missed:
        why = f"it measured {'; '.join(missed)}"
    else:
        why = "these numbers have nothing to judge it on for what you asked"
    return (
        f"{first.pick.label} is put ahead of the rules' first choice "
        f"{rules_first.pick.label}, because it measured {met}, while for "
        f"{rules_first.pick.label} {why}."
    )


def _unmeasured(shown: list[Candidate], bench: BenchResults) -> list[str]:
    """A note for each candidate shown that the bench results have no number for."""
    return [
        f"{c.pick.label} has no measurement in these numbers ({bench.source}): `ipcwire "
        f"bench --quick --mechanisms {c.pick.scheme} --json FILE` measures it."
        for c in shown
        if not c.claims
    ]


def _no_driver_notes(path: list[Step]) -> list[str]:
    """A note for each pick of an applying rule that ipcwire has no driver for (xpc): the
    rule's choice, and why it is not the recommendation."""
    out = []
    for step in path:
        for seen in step.considered:
            if seen.no_driver is not None:
                out.append(
                    f"{seen.title} is the native choice here (rule {step.rule.id}: "
                    f"{step.rule.because}), but {seen.no_driver}."
                )
    return out


_FLAGS = {q.key: q.flag for q in QUESTIONS}


def _flags(req: Requirement) -> str:
    """The flags that ask for a requirement: ``--durable``, ``--distance may-move``."""
    out = []
    for c in req.when:
        if c.op == "=" and c.value is True:
            out.append(_FLAGS[c.key])
        elif c.op == "=":
            out.append(f"{_FLAGS[c.key]} {c.value}")
        else:
            out.append(_FLAGS[c.key])
    return " ".join(dict.fromkeys(out))


def _nothing_fits(answers: Answers) -> list[str]:
    """When no pick survives: the requirement that leaves the fewest mechanisms, what those
    lack of the rest, and what to do (drop one; for durable, a message broker outside
    ipcwire)."""
    values = answers.as_dict()
    # two one-way channels make a pair both ways; sleeping when idle is the wait policy's
    active = [
        r
        for r in REQUIREMENTS
        if holds(r.when, values) is None
        and r.capability not in ("bidirectional", "sleeps_when_idle")
    ]
    specs = [
        s
        for s in mechanisms()
        if no_driver(s) is None and any(answers.os.startswith(p) for p in s.capabilities.platforms)
    ]
    if len(active) < 2:
        return []

    def having(req: Requirement) -> list[MechanismSpec]:
        return [s for s in specs if getattr(s.capabilities, req.capability)]

    rarest = min(active, key=lambda r: len(having(r)))
    lacked: list[Requirement] = []
    parts = []
    for spec in having(rarest):
        caps = spec.capabilities
        lacks = [r for r in active if r is not rarest and not getattr(caps, r.capability)]
        if lacks:
            lacked += [r for r in lacks if r not in lacked]
            what = "; ".join(f"{r.why} ({_flags(r)})" for r in lacks)
            parts.append(f"{spec.title} ({spec.scheme}) does that, but it cannot meet: {what}")
    found = "; ".join(parts) or "no registered mechanism here does"
    if len(having(rarest)) == 1:
        found = "only " + found
    drop = [_flags(r) for r in (rarest, *lacked)]
    text = (
        f"Nothing here has everything asked for: {rarest.why} ({_flags(rarest)}): {found}. "
        f"Drop {'one of ' if len(drop) > 1 else ''}{', '.join(drop)}"
    )
    if answers.durable:
        text += (
            ", or put a message broker between the processes, outside ipcwire: a message-queue "
            "server (a database-backed queue, or an AMQP broker such as RabbitMQ) keeps messages "
            "across crashes, serves processes on other machines, and redelivers a message whose "
            "consumer died before acknowledging it"
        )
    return [text + "."]


def advise(
    answers: Answers,
    bench: BenchResults | None = None,
    *,
    size: int = 64,
    rules: tuple[Rule, ...] = RULES,
) -> Advice:
    """Answer ``ipcwire choose``: walk the rules, keep what the registry allows, weigh the
    numbers (``size``: the message size the round trip is judged at; ``rules``: the table)."""
    values = answers.as_dict()
    steps: list[Step] = []
    candidates: list[Candidate] = []
    for rule in rules:
        step = Step(rule, holds(rule.when, values))
        if step.failed is None:
            for pick in rule.picks:
                seen = consider(pick, answers)
                step.considered.append(seen)
                # the same mechanism from an earlier rule (its ``how`` may differ)
                bare = replace(pick, how="")
                duplicate = any(replace(c.pick, how="") == bare for c in candidates)
                if seen.skipped is None and not duplicate:
                    because = rule.because
                    if pick != rule.picks[0]:
                        # not the rule's reason, which is for its first pick
                        because = f"rule {rule.id}'s next choice after {rule.picks[0].label}"
                    cand = Candidate(
                        pick, seen.title, seen.url, rule, because_text(because, pick, answers)
                    )
                    cand.caveats = caveats_for(pick, answers)
                    candidates.append(cand)
        steps.append(step)
    warnings: list[str] = []
    notes: list[str] = []
    if bench is not None:
        for cand in candidates:
            cand.claims = _claims(cand, answers, bench, size)
        warnings += _contradictions(candidates)
        rules_first = candidates[0] if candidates else None
        if not any(c.meets for c in candidates):
            candidates = _from_measurements(answers, bench, size, candidates, warnings) + candidates
        # those measured to reach what was asked go first; the rest keep the rules' order (an
        # unmeasured pick is not put before the rules' answer because its number is unknown)
        candidates.sort(key=lambda c: c.meets is not True)
        if rules_first is not None and candidates[0] is not rules_first:
            notes.append(_reordered(candidates[0], rules_first))
        asked = answers.latency_us is not None or answers.throughput is not None
        if asked and candidates and not any(c.meets for c in candidates):
            how_far = (
                "the numbers beside it say how far off it is"
                if candidates[0].claims
                else "it has no measurement in these numbers"
            )
            warnings.append(
                "Nothing measured here reaches what you asked for; the recommendation is the "
                f"rules' answer, and {how_far}."
            )
        if asked:
            notes += _unmeasured(candidates[:2], bench)
        if warnings:
            vm = [e for e in bench.explanations if "irtual machine" in e]
            warnings += vm[:1]
    elif answers.latency_us is not None or answers.throughput is not None:
        notes.append(
            "The numbers in these rules are rules of thumb, not measurements of this machine: "
            "pass --bench results.json (from `ipcwire bench --json`) or --measure."
        )
    else:
        notes.append(
            "No measurements of this machine were used: pass --bench results.json (from "
            "`ipcwire bench --json results.json`) or --measure to see each candidate's numbers."
        )
    if not candidates:
        warnings += _nothing_fits(answers)
    chosen = candidates[:2]
    rule_ids = [c.rule.id for c in chosen if c.rule is not None]
    last = max((i for i, s in enumerate(steps) if s.rule.id in rule_ids), default=len(steps) - 1)
    notes += _no_driver_notes(steps[: last + 1])
    return Advice(
        answers=answers,
        recommended=chosen[0] if chosen else None,
        runner_up=chosen[1] if len(chosen) > 1 else None,
        steps=steps,
        path_length=last + 1,
        candidates=candidates,
        warnings=warnings,
        notes=notes,
        bench=bench,
    )
