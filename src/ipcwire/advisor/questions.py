"""The questions ``ipcwire choose`` asks, as data: one table drives the flags, the interactive
questionnaire, the JSON and the decision-tree page.

Each answer is a plain value: a choice (a string), yes/no (a bool), a latency in microseconds
or a throughput in bytes per second (a float, or None for "no requirement").
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, fields
from typing import Final, Literal

__all__ = [
    "QUESTIONS",
    "Answers",
    "Question",
    "format_bytes_per_s",
    "format_us",
    "parse_answer",
    "parse_latency",
    "parse_throughput",
    "this_os",
]

Kind = Literal["choice", "bool", "latency", "throughput"]


def this_os() -> str:
    """This machine's OS as the registry's platform names spell it (linux, darwin...)."""
    for name in ("linux", "darwin", "freebsd", "win32"):
        if sys.platform.startswith(name):
            return name
    return sys.platform


@dataclass(frozen=True, slots=True)
class Question:
    """One question: its answer's key in :class:`Answers`, the flag, the prompt and the
    values it accepts. ``label`` is how the rules and the decision tree name it."""

    key: str
    flag: str
    prompt: str
    label: str
    kind: Kind
    choices: tuple[str, ...] = ()
    help: str = ""


QUESTIONS: Final[tuple[Question, ...]] = (
    Question("relation", "--relation", "Are the processes parent and child (one starts the "
             "other), or unrelated?", "processes", "choice", ("parent-child", "unrelated"),
             "parent-child: one process starts the other"),
    Question("agents", "--agents", "Is this an agent architecture? none; spawned (a parent "
             "spawns agents); web-ui (spawned agents, and a web UI watches); orchestrator "
             "(an orchestrator and independent agents)", "agents", "choice",
             ("none", "spawned", "web-ui", "orchestrator")),
    Question("progress", "--progress", "Must progress flow back to the parent while the "
             "child works (besides its result)?", "progress flows back", "bool"),
    Question("direction", "--direction", "Do messages go one way, or both ways?",
             "direction", "choice", ("both", "one-way")),
    Question("receivers", "--receivers", "How many processes receive each message: one, or "
             "several (listeners that may come and go)?", "receivers", "choice",
             ("one", "several"),
             "several: one producer, many listeners (a FIFO has only one reader)"),
    Question("distance", "--distance", "Will the processes always share this machine, or "
             "may they move apart (other machines, containers that scale out)?", "distance",
             "choice", ("same-machine", "may-move")),
    Question("users", "--users", "Do the processes run as one user, or as several users "
             "(services of different accounts on one host)?", "users", "choice",
             ("one", "several"),
             "several: processes of different users on one host (socket modes, allow_uids=)"),
    Question("browser", "--browser", "Is a browser involved, and how? none; server-to-client "
             "(the page is pushed updates); both-ways; request-reply", "browser", "choice",
             ("none", "server-to-client", "both-ways", "request-reply")),
    Question("pattern", "--pattern", "Request/reply, streaming, or fire-and-forget?",
             "pattern", "choice", ("request-reply", "streaming", "fire-and-forget")),
    Question("typed_rpc", "--typed-rpc", "Do you want typed RPC (a schema, generated stubs)?",
             "typed RPC", "bool"),
    Question("latency_us", "--latency", "Required round-trip latency (for example 10us or "
             "1ms; empty for no requirement)?", "round trip", "latency",
             help="the round trip you need, e.g. 10us, 500ns, 2ms"),
    Question("throughput", "--throughput", "Required throughput (for example 1GB/s or "
             "200MB/s; empty for no requirement)?", "throughput", "throughput",
             help="the throughput you need, e.g. 1GB/s, 200MB/s"),
    Question("durable", "--durable", "Must messages survive a crash of either side?",
             "survives a crash", "bool"),
    Question("tells_failure", "--tells-failure", "Must each side tell a peer that was killed "
             "or failed from one that finished (an orchestrator watching its agents)?",
             "tells a crash from a finish", "bool"),
    Question("service", "--service", "Is it a long-running desktop service that other "
             "programs call?", "desktop service", "bool"),
    Question("os", "--os", "Which OS does it run on?", "OS", "choice",
             ("linux", "darwin", "freebsd")),
    Question("idle_sleep", "--idle-sleep", "Must it sleep when idle (no core kept busy "
             "waiting)?", "sleeps when idle", "bool"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Answers:
    """The situation to advise on. Defaults describe the common case: two unrelated processes
    on one machine, of one user, both ways, request/reply, no numbers required, sleeping when
    idle."""

    relation: str = "unrelated"
    agents: str = "none"
    progress: bool = False
    direction: str = "both"
    receivers: str = "one"
    distance: str = "same-machine"
    users: str = "one"
    browser: str = "none"
    pattern: str = "request-reply"
    typed_rpc: bool = False
    latency_us: float | None = None
    throughput: float | None = None
    durable: bool = False
    tells_failure: bool = False
    service: bool = False
    os: str = this_os()
    idle_sleep: bool = True

    def as_dict(self) -> dict[str, object]:
        """The answers as plain data."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def describe(self, key: str) -> str:
        """One answer in words ("10 µs", "yes", "parent-child")."""
        return describe_value(key, getattr(self, key))


_QUESTION_BY_KEY: Final = {q.key: q for q in QUESTIONS}
_LATENCY_UNITS: Final = {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6}
_SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_NUMBER: Final = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Zµ/]*)\s*$")


def parse_latency(text: str) -> float:
    """``"10us"`` -> 10.0 (microseconds); units ns, us (or µs), ms, s (a unit is required).

    Raises:
        ValueError: not a duration, no unit, or zero.
    """
    m = _NUMBER.match(text)
    unit = m.group(2).lower() if m else ""
    if m is not None and not unit:
        raise ValueError(f"{text!r} has no unit: write it like 10us, 500ns or 2ms")
    if m is None or unit not in _LATENCY_UNITS:
        raise ValueError(f"{text!r} is not a latency: write it like 10us, 500ns or 2ms")
    if float(m.group(1)) == 0:
        raise ValueError(f"{text!r}: no round trip takes no time; ask for more than 0")
    return float(m.group(1)) * _LATENCY_UNITS[unit]


def parse_throughput(text: str) -> float:
    """``"1GB/s"`` -> 1e9 (bytes per second); units B, KB, MB, GB (powers of 1000) or KiB,
    MiB, GiB, each optionally followed by /s.

    Raises:
        ValueError: not a throughput, or zero.
    """
    m = _NUMBER.match(text)
    unit = m.group(2).lower().removesuffix("/s") if m else ""
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a throughput: write it like 1GB/s or 200MB/s")
    if float(m.group(1)) == 0:
        raise ValueError(f"{text!r}: a throughput of 0 is no requirement; leave it out")
    return float(m.group(1)) * _SIZE_UNITS[unit]


_YES: Final = {"y", "yes", "true", "1", "on"}
_NO: Final = {"n", "no", "false", "0", "off"}


def parse_answer(key: str, text: str) -> object:
    """The value of one answer, given as text (a flag's argument or a typed reply).

    Raises:
        ValueError: the text is not one of the accepted values (the message lists them).
    """
    q = _QUESTION_BY_KEY[key]
    value = text.strip()
    if q.kind == "bool":
        if value.lower() in _YES:
            return True
        if value.lower() in _NO:
            return False
        raise ValueError(f"{q.flag}: answer yes or no, not {text!r}")
    if q.kind in ("latency", "throughput"):
        if value.lower() in ("", "none", "-"):
            return None
        try:
            return parse_latency(value) if q.kind == "latency" else parse_throughput(value)
        except ValueError as exc:
            raise ValueError(f"{q.flag}: {exc}") from None
    matches = (
        [value] if value in q.choices else [c for c in q.choices if value and c.startswith(value)]
    )
    if len(matches) != 1:
        raise ValueError(f"{q.flag}: choose one of {', '.join(q.choices)} (not {text!r})")
    return matches[0]


def format_us(value: float) -> str:
    """Microseconds for people: "0.82 µs", "45.2 µs", "1.25 ms"."""
    if value >= 1000:
        return f"{value / 1000:.3g} ms"
    if value >= 10:
        return f"{value:.1f} µs"
    return f"{value:.2f} µs"


def format_bytes_per_s(value: float) -> str:
    """Bytes per second for people: "1.36 GB/s", "740 MB/s"."""
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} B/s"


def describe_value(key: str, value: object) -> str:
    """An answer (or a rule's threshold) in words."""
    if value is None:
        return "no requirement"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "latency_us" and isinstance(value, int | float):
        return format_us(float(value))
    if key == "throughput" and isinstance(value, int | float):
        return format_bytes_per_s(float(value))
    return str(value)
