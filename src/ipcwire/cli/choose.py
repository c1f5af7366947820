"""``ipcwire choose``: which mechanism for your situation, answered with this machine's numbers.

Answers come from flags (``--relation parent-child --progress``, ``--latency 10us``) or from
plain prompts (``-i``: one question per line, Enter keeps the default, works in any terminal
and from a pipe). Numbers come from ``--bench results.json`` (``ipcwire bench --json``) or a
short measurement now (``--measure``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from ipcwire.advisor.engine import Advice, Candidate, Step, advise
from ipcwire.advisor.evidence import BenchResults
from ipcwire.advisor.questions import QUESTIONS, Answers, Question, describe_value, parse_answer
from ipcwire.advisor.rules import REQUIREMENTS, RULES
from ipcwire.cli._console import console
from ipcwire.errors import ConfigurationError

__all__ = ["add_parser", "ask", "relevant", "render", "run"]

_LABELS = {q.key: q.label for q in QUESTIONS}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``choose`` subcommand and its flags (one per question)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "choose",
        help="which mechanism fits your situation, with this machine's numbers",
        description="Walk the decision rules for your answers; -i asks the questions.",
    )
    p.add_argument("-i", "--interactive", action="store_true", help="ask the questions")
    for q in QUESTIONS:
        if q.kind == "bool":
            p.add_argument(q.flag, dest=q.key, nargs="?", const="yes", metavar="yes|no",
                           help=q.prompt)  # fmt: skip
        else:
            metavar = "|".join(q.choices) if q.choices else q.kind.upper()
            p.add_argument(q.flag, dest=q.key, metavar=metavar, help=q.help or q.prompt)
    p.add_argument("--bench", metavar="RESULTS.json", help="numbers from `ipcwire bench --json`")
    p.add_argument("--measure", action="store_true", help="measure the candidates now (seconds)")
    p.add_argument("--size", type=_size, default=64, help="message size for round trips (64)")
    p.add_argument("--json", action="store_true", help="print JSON for tools")
    return p


def _size(text: str) -> int:
    """A message size the benchmark can measure: 16 bytes to 64 MiB (64, 4K, 1M...)."""
    from ipcwire.bench.payload import MIN_SIZE
    from ipcwire.cli.bench import parse_size

    size = parse_size(text)
    if not MIN_SIZE <= size <= _MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"{text!r}: message sizes go from {MIN_SIZE} bytes to 64M (ipcwire's largest message)"
        )
    return size


_MAX_SIZE = 64 * 1024 * 1024  # ipcwire's default max_frame


def _contradictions(given: dict[str, object]) -> list[str]:
    """Answers given together that cannot both hold, and which one the answer follows:
    ``--direction`` over ``--pattern request-reply``; ``--browser`` over ``--direction``
    (the browser rules come first, and "one way" does not say which way)."""
    if given.get("direction") != "one-way":
        return []
    out = []
    if given.get("pattern") == "request-reply":
        out.append("You said messages go one way, and request/reply: a reply needs a way back. "
                   "This answer is for one-way messages; for requests and replies, leave out "
                   "--direction (or say --direction both).")  # fmt: skip
    if given.get("browser") in ("both-ways", "request-reply"):
        out.append(f"You said messages go one way, and a browser talks {given['browser']}: "
                   "this answer follows --browser, whose mechanism carries both directions "
                   "(and one way too). If the page is only pushed updates, say --browser "
                   "server-to-client.")  # fmt: skip
    return out


def _from_flags(args: argparse.Namespace) -> dict[str, object]:
    values: dict[str, object] = {}
    for q in QUESTIONS:
        text = getattr(args, q.key, None)
        if text is not None:
            try:
                values[q.key] = parse_answer(q.key, text)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
    return values


def relevant(q: Question, answered: dict[str, object]) -> bool:
    """Whether ``q`` can still matter: a requirement reads it, or a rule that mentions it has
    no condition already failing on the answers given so far (``os`` and ``users`` always:
    they change the URLs and the reasons)."""
    if any(c.key == q.key for r in REQUIREMENTS for c in r.when) or q.key in ("os", "users"):
        return True
    for rule in RULES:
        if any(c.key == q.key for c in rule.when) and all(
            c.key not in answered or c.holds(answered[c.key]) for c in rule.when
        ):
            return True
    return False


def _prompt_text(q: Question, default: object) -> str:
    if q.kind == "bool":
        options = "yes/no"
    elif q.choices:
        options = "/".join(q.choices)
    else:
        options = "a number with its unit"
    return f"{q.prompt} [{options}] (Enter: {describe_value(q.key, default)}): "


def ask(given: dict[str, object]) -> dict[str, object]:
    """Ask every question that can still matter, with plain prompts on stderr and answers
    read by ``input()``; flags already given are the defaults.

    Raises:
        ConfigurationError: the input ended before the questions did.
    """
    defaults = Answers().as_dict() | given
    answers: dict[str, object] = {}
    for q in QUESTIONS:
        if not relevant(q, answers):
            continue
        while True:
            print(_prompt_text(q, defaults[q.key]), end="", file=sys.stderr, flush=True)
            try:
                line = input()
            except (EOFError, RuntimeError):  # RuntimeError: no stdin at all (<&-)
                raise ConfigurationError(
                    f"the input ended before the question {q.flag} was answered"
                ) from None
            if not line.strip():
                answers[q.key] = defaults[q.key]
                break
            try:
                answers[q.key] = parse_answer(q.key, line)
                break
            except ValueError as exc:
                print(f"  {exc}", file=sys.stderr)
    return given | answers


def _candidate(console: Console, heading: str, cand: Candidate) -> None:
    console.print(f"[bold]{heading}[/] {escape(cand.title)}  [cyan]{escape(cand.url)}[/]")
    if cand.pick.how:
        console.print(f"    how: {escape(cand.pick.how)}")
    console.print(f"    why: {escape(cand.because)}")
    for claim in cand.claims:
        mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "·"}[claim.meets]
        console.print(f"    {mark} measured: {escape(claim.text())}")
    for text in cand.not_applicable:
        console.print(f"    [green]✓[/] does not apply: {escape(text)}")
    for text in cand.caveats:
        console.print(f"    [yellow]caveat:[/] {escape(text)}")


def _path_lines(advice: Advice) -> list[tuple[str, Step]]:
    """The path, with consecutive rules that fail on the same answer on one line."""
    out: list[tuple[str, Step]] = []
    group: list[Step] = []

    def flush() -> None:
        if group:
            first = group[0]
            if len(group) == 1:
                out.append((first.text(advice.answers), first))
            else:
                assert first.failed is not None
                key = first.failed.key
                ids = ", ".join(s.rule.id for s in group)
                what = f"{_LABELS[key]} is {advice.answers.describe(key)}"
                out.append((f"{ids}: no: {what}", first))
            group.clear()

    for step in advice.path:
        if step.failed is None:
            flush()
            out.append((step.text(advice.answers), step))
        else:
            if group and group[0].failed is not None and group[0].failed.key != step.failed.key:
                flush()
            group.append(step)
    flush()
    return out


def render(advice: Advice, console: Console) -> None:
    """The advice for people."""
    if advice.recommended is None:
        console.print("[bold red]No registered mechanism fits these answers here.[/]")
    else:
        _candidate(console, "Recommended:", advice.recommended)
    if advice.runner_up is not None:
        _candidate(console, "Runner-up:  ", advice.runner_up)
    console.print("\n[bold]The path through the rules[/] (python -m ipcwire.advisor.docs draws "
                  "them all in docs/choose.md):")  # fmt: skip
    for text, step in _path_lines(advice):
        console.print(f"  - {escape(text)}", style="" if step.failed is None else "dim")
        for seen in step.considered:
            if seen.skipped is None:
                console.print(f"      -> {escape(seen.pick.label)}: {escape(seen.url)}")
            else:
                console.print(f"      -> {escape(seen.pick.label)} skipped: "
                              f"{escape(seen.skipped)}", style="yellow")  # fmt: skip
    if advice.bench is not None:
        when = f", run {advice.bench.started_at}" if advice.bench.started_at else ""
        console.print(f"\nNumbers: {escape(advice.bench.source)}{when}")
    for w in advice.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(w)}")
    for n in advice.notes:
        console.print(f"[dim]note: {escape(n)}[/]")


def run(args: argparse.Namespace) -> int:
    """Run ``ipcwire choose``: 0 with a recommendation, 1 when nothing fits, 2 on bad input
    (answers, or a ``--bench`` file that cannot be read or is not a bench report)."""
    try:
        values = _from_flags(args)
        if args.interactive:
            values = ask(values)
        # a --bench file that is missing, unreadable or not a report is bad input too
        bench = BenchResults.load(args.bench) if args.bench else None
    except ConfigurationError as exc:
        print(f"ipcwire choose: {exc}", file=sys.stderr)
        return 2
    answers = Answers(**values)  # type: ignore[arg-type]
    advice = advise(answers, bench, size=args.size)
    if args.measure:
        from ipcwire.advisor.measure import measure, not_measured, schemes_to_measure

        schemes = schemes_to_measure(answers, [c.pick.scheme for c in advice.candidates])
        if not args.json:
            print(f"measuring {', '.join(schemes)} (a few seconds)...", file=sys.stderr)
        from ipcwire.bench.report import arg_text

        argv = ["ipcwire", *map(arg_text, sys.argv[1:])]
        bench = measure(schemes, size=args.size, command_line=argv)
        advice = advise(answers, bench, size=args.size)
        advice.notes += not_measured(bench, schemes)
    advice.warnings += _contradictions(values)
    if args.json:
        print(json.dumps(advice.as_dict(), indent=2, ensure_ascii=False))
    else:
        render(advice, console(soft_wrap=True))  # no newline inside a URL when piped
    return 0 if advice.recommended is not None else 1
