"""What a benchmark contender is, and the registry of contenders.

A contender is one way of moving messages between two processes: an ipcwire mechanism with
one API flavour, a raw-Python baseline, or a peer library. It provides two functions that
run in the two worker processes:

* ``side_a(task, shared) -> Acceptor`` runs first, in process A: bind or listen, and return
  an object with ``address`` (a string handed to side B) and ``accept() -> Link``.
* ``side_b(task, address, shared) -> Link`` runs in process B: connect to ``address``.

In a round trip B sends and A echoes; in a throughput run B sends and A receives (the other
way round for a contender with ``listener_sends``).

A **link** has ``send(message)``, ``recv() -> message`` and ``close()``; a batched contender
also ``send_many(list)`` and ``recv_many() -> list``. For an asyncio contender
(``api="asyncio"``) ``side_a``, ``side_b``, ``accept`` and the link's methods are coroutines
and ``close`` is ``aclose``. Messages are ``bytes`` (or bytes-like) of the task's size.

The harness owns the loops (round trip: A echoes what B sends; throughput: B sends, A
receives), the clocks and the verification, so every contender is measured the same way;
see docs/benchmarks.md. ``side_a``/``side_b`` must be module-level functions: the contender
is pickled by reference into the worker processes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

__all__ = [
    "GROUPS",
    "KINDS",
    "Acceptor",
    "Contender",
    "Link",
    "Task",
    "contenders",
    "register_contender",
    "unregister_contender",
]

Kind = Literal["round_trip", "throughput"]
KINDS: Final[tuple[Kind, ...]] = ("round_trip", "throughput")
GROUPS: Final = ("ipcwire", "baseline", "peer")
WAIT_POLICIES: Final = ("park", "spin", "hybrid")


@dataclass(frozen=True, slots=True)
class Task:
    """One measurement, as each worker process sees it."""

    contender: Contender
    kind: Kind
    size: int
    batch: int  # 0: one message per call; n: send_many/recv_many with n messages per send
    warmup: float  # seconds
    duration: float  # seconds of the measured phase
    workdir: str  # a private directory for socket files and the like
    serial: int  # unique in the run: use it to name endpoints
    seed: int
    # round trips: after the warm-up, this many more, each after ``gap`` seconds of idle time
    # (side B sleeps in the kernel, untimed), timed apart from the back-to-back ones
    idle: int = 0
    gap: float = 0.0


class Link(Protocol):
    """One end of a connection (blocking). ``send_many``/``recv_many`` only when batched."""

    def send(self, message: bytes, /) -> Any: ...

    def recv(self) -> Any: ...

    def close(self) -> Any: ...


class Acceptor(Protocol):
    """Side A's listening end (blocking)."""

    address: str

    def accept(self) -> Any: ...

    def close(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Contender:
    """One row of the benchmark table.

    ``id``: stable, unique, used in JSON and on the command line ("ipcwire/unix/blocking").
    ``group``: "ipcwire", "baseline" (raw Python, no ipcwire) or "peer" (another library).
    ``mechanism``: the OS mechanism underneath ("unix", "tcp", "pipe", "shm", ...); used by
    ``--mechanisms`` and to pick the baseline.
    ``wait``: "park" (sleeps in the kernel when idle), "spin" (busy-polls) or "hybrid".
    ``framing``/``overhead``: how messages are delimited and the bytes that costs per message.
    ``baseline``: id of the contender this one is compared with (its raw-Python baseline).
    ``batched``: throughput is measured with ``send_many``/``recv_many``.
    ``listener_sends``: for one-way mechanisms whose listening side is the sender (Server-Sent
    Events): side A sends and side B receives in throughput runs.
    ``make_shared``: run in the parent before the workers start; its result is handed to
    both workers (for objects that can only be inherited, like ``multiprocessing.Queue``).
    ``wait_choice``: this row is one of several wait policies of one mechanism (ipcwire shm's
    park, spin and hybrid); such rows, and every row that does not simply park, also get
    round trips with idle time between requests (:attr:`measures_idle`).
    ``unequal``: for a baseline, the kinds ("throughput", "round_trip") in which the rows
    compared with it do other work than it does, each with why (ipcwire's HTTP channel packs
    what is queued into one POST, this baseline posts each message): their ratio to it is
    shown as not comparable, and no target counts it as held or missed.
    """

    id: str
    title: str
    group: str
    mechanism: str
    api: Literal["blocking", "asyncio"]
    side_a: Callable[..., Any]
    side_b: Callable[..., Any]
    wait: str = "park"
    framing: str = "4-byte length prefix"
    overhead: int | None = 4
    kinds: tuple[Kind, ...] = KINDS
    batched: bool = False
    listener_sends: bool = False
    baseline: str | None = None
    requires: tuple[str, ...] = ()
    make_shared: Callable[[], Any] | None = None
    max_size: int | None = None
    patterns: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    unequal: Mapping[str, str] = field(default_factory=dict)
    wait_choice: bool = False

    @property
    def measures_idle(self) -> bool:
        """Whether its round trips are also measured after idle time: a row whose wait policy
        is a choice (back to back, a ``hybrid`` wait never leaves its spin phase; after 1 ms
        idle it parks), or one that busy-polls (whose idle numbers show what spinning buys)."""
        return "round_trip" in self.kinds and (self.wait_choice or self.wait != "park")

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"contender {self.id}: group must be one of {GROUPS}")
        if self.wait not in WAIT_POLICIES:
            raise ValueError(f"contender {self.id}: wait must be one of {WAIT_POLICIES}")
        if self.api not in ("blocking", "asyncio"):
            raise ValueError(f"contender {self.id}: api must be 'blocking' or 'asyncio'")
        for kind in (*self.kinds, *self.unequal):
            if kind not in KINDS:
                raise ValueError(f"contender {self.id}: unknown kind {kind!r}")

    def unavailable_reason(self) -> str | None:
        """Why this contender cannot run here (a missing library), or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{self.title}: the Python package {module!r} is not installed"
        return None

    def describe(self) -> dict[str, Any]:
        """The contender as plain data (for the JSON report)."""
        return {
            "id": self.id,
            "title": self.title,
            "group": self.group,
            "mechanism": self.mechanism,
            "api": self.api,
            "wait": self.wait,
            "framing": self.framing,
            "overhead_bytes": self.overhead,
            "batched": self.batched,
            "listener_sends": self.listener_sends,
            "baseline": self.baseline,
            "patterns": dict(self.patterns),
            "note": self.note,
            "unequal": dict(self.unequal),
        }


_REGISTERED: dict[str, Contender] = {}


def register_contender(contender: Contender) -> None:
    """Add a contender to every later ``ipcwire bench`` run in this process.

    Mechanism authors call this from a module listed in
    ``ipcwire.bench.builtin.CONTENDER_MODULES`` (or any module imported before the run).

    Raises:
        ValueError: another contender already has this id.
    """
    existing = _REGISTERED.get(contender.id)
    if existing is not None and existing != contender:
        raise ValueError(f"a contender with id {contender.id!r} is already registered")
    _REGISTERED[contender.id] = contender


def unregister_contender(contender_id: str) -> None:
    """Remove a registered contender (for tests); unknown ids are ignored."""
    _REGISTERED.pop(contender_id, None)


def contenders() -> list[Contender]:
    """The explicitly registered contenders, in registration order."""
    return list(_REGISTERED.values())
