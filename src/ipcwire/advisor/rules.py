"""The decision rules of ``ipcwire choose``, as data: one ordered table.

Reading it: the rules are tried from the top; a rule applies when all its conditions hold for
the answers; its picks are considered in order, and a pick survives when its scheme is
registered, works on the target OS (and here, when the target is this machine), and has every
capability the answers require (:data:`REQUIREMENTS`, checked against the registry's
capabilities, never restated here). The first surviving pick is the recommendation, the next
one (from the same rule or a later one) the runner-up. The last rule has no condition, so
there is always an answer.

A pick names a scheme and, where it matters, a wait policy (``shm`` with ``wait="spin"``) or a
URL for an alias whose example the registry does not give (``grpc+unix``). Capabilities,
titles, example URLs and availability all come from :mod:`ipcwire.registry`.

``docs/choose.md`` renders this table as a decision tree (``python -m ipcwire.advisor.docs``
rewrites it; a test fails while it is out of date).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["REQUIREMENTS", "RULES", "Condition", "Pick", "Requirement", "Rule", "holds"]

Op = Literal["=", "!=", "<=", ">="]


@dataclass(frozen=True, slots=True)
class Condition:
    """``answers.<key> <op> <value>``; a numeric condition never holds for "no requirement"."""

    key: str
    op: Op
    value: object

    def holds(self, answer: object) -> bool:
        """Whether this condition holds for the given answer."""
        if self.op == "=":
            return answer == self.value
        if self.op == "!=":
            return answer != self.value
        if not isinstance(answer, int | float) or not isinstance(self.value, int | float):
            return False
        return answer <= self.value if self.op == "<=" else answer >= self.value


def holds(conditions: tuple[Condition, ...], answers: dict[str, object]) -> Condition | None:
    """The first condition that does not hold (None: they all do)."""
    for cond in conditions:
        if not cond.holds(answers[cond.key]):
            return cond
    return None


@dataclass(frozen=True, slots=True)
class Pick:
    """One mechanism a rule recommends.

    ``wait``: the wait policy to ask for (``?policy=spin`` on the URL); it must be one of the
    registry's ``wait_policies`` for the scheme. ``url``: only when the registry's example URL
    does not fit (an alias). ``also``: schemes used together with this one (stdio to the agents
    plus SSE to the browser); a combination has a capability when one of its parts has it.
    ``per_direction``: used as two channels, one each way, so the pair goes both ways even
    when the mechanism is one-way. ``how``: one line on using it (for a pick after the first,
    the reason shown for it).
    """

    scheme: str
    wait: str | None = None
    url: str | None = None
    also: tuple[str, ...] = ()
    per_direction: bool = False
    how: str = ""

    @property
    def spins(self) -> bool:
        """Whether this pick keeps a core busy while waiting."""
        return self.wait == "spin"

    @property
    def label(self) -> str:
        """``shm (policy=spin)``, ``pipe + sse+http``."""
        text = " + ".join((self.scheme, *self.also))
        if self.per_direction:
            text += " x2 (one per direction)"
        return f"{text} (policy={self.wait})" if self.wait else text


@dataclass(frozen=True, slots=True)
class Rule:
    """When all of ``when`` hold, recommend ``picks`` (in order), ``because`` (one sentence)."""

    id: str
    when: tuple[Condition, ...]
    picks: tuple[Pick, ...]
    because: str


@dataclass(frozen=True, slots=True)
class Requirement:
    """When all of ``when`` hold, every pick must have the registry capability ``capability``.

    ``sleeps_when_idle`` is not a registry field: it holds for every pick that does not spin.
    """

    when: tuple[Condition, ...]
    capability: str
    why: str


def _c(key: str, op: Op, value: object) -> Condition:
    return Condition(key, op, value)


def _eq(key: str, value: object) -> Condition:
    return Condition(key, "=", value)


REQUIREMENTS: Final[tuple[Requirement, ...]] = (
    Requirement((_eq("direction", "both"), _c("browser", "!=", "server-to-client")),
                "bidirectional", "messages go both ways"),
    Requirement((_eq("distance", "may-move"),), "crosses_machines",
                "the processes may move to other machines"),
    Requirement((_c("browser", "!=", "none"),), "browser", "a browser takes part"),
    Requirement((_eq("durable", True),), "durable", "messages must survive a crash"),
    Requirement((_eq("tells_failure", True),), "tells_failure",
                "each side must tell a killed or failed peer from one that finished"),
    Requirement((_c("pattern", "!=", "fire-and-forget"),), "reliable",
                "every message must arrive (not fire-and-forget)"),
    Requirement((_eq("idle_sleep", True),), "sleeps_when_idle", "it must sleep when idle"),
    Requirement((_eq("receivers", "several"),), "multi_client",
                "several receivers each need a channel from one producer"),
)  # fmt: skip

_SPAWN = "ipcwire.spawn([...]) in the parent, ipcwire.stdio() in the child"
_SHM_PATH = (
    "in a container or sandbox, name it by a socket path in a directory both see: "
    "shm:///dir/app.sock, not shm://app (docs/containers.md)"
)
_FAN_OUT = (
    "the producer listens; each receiver connects (and may leave); send each message on "
    "every accepted channel"
)

RULES: Final[tuple[Rule, ...]] = (
    Rule("durable", (_eq("durable", True),),
         (Pick("spool", how="producers and consumers need no server; a crashed consumer's "
                            "claim returns to the queue"),
          Pick("spool", per_direction=True, how="one spool for requests, one for replies")),
         "only a file spool keeps messages on disk across crashes (atomic rename, fsync)"),
    Rule("agents-spawned", (_eq("agents", "spawned"), _eq("progress", False)),
         (Pick("pipe", how=_SPAWN),
          Pick("unix", how="the parent listens on a Unix socket and each agent connects "
                           "back: a channel per agent, its pid from the kernel")),
         "a parent spawning agents talks to each over its stdin/stdout: nothing to name, "
         "nothing to clean up, the agent dies with its pipes"),
    Rule("agents-spawned-progress", (_eq("agents", "spawned"), _eq("progress", True)),
         (Pick("unix"), Pick("pipe", how=_SPAWN)),
         "agents reporting progress while they work want a channel of their own: a Unix "
         "socket the parent listens on, each agent connecting back"),
    Rule("agents-web-ui", (_eq("agents", "web-ui"),),
         (Pick("pipe", also=("sse+http",), how=_SPAWN + "; the parent serves SSE to the page"),
          Pick("ws")),
         "spawned agents over stdio, and Server-Sent Events from the parent to the web UI "
         "(a browser reads SSE natively)"),
    Rule("agents-orchestrator-local", (_eq("agents", "orchestrator"),
                                       _eq("distance", "same-machine")),
         (Pick("unix"), Pick("grpc", url="grpc+unix:///run/user/1000/agents.sock")),
         "independent agents on one machine connect to the orchestrator's Unix socket "
         "(peer credentials say who they are)"),
    Rule("agents-orchestrator-scale-out", (_eq("agents", "orchestrator"),
                                           _eq("distance", "may-move")),
         (Pick("grpc"), Pick("ws")),
         "agents that may scale out to other machines need a network protocol: gRPC for "
         "typed calls and streams, WebSocket for plain messages"),
    Rule("browser-push", (_eq("browser", "server-to-client"),),
         (Pick("sse+http"), Pick("ws")),
         "Server-Sent Events: the browser's EventSource reconnects and resumes by itself"),
    Rule("browser-both-ways", (_eq("browser", "both-ways"),),
         (Pick("ws"), Pick("sse+http", also=("http",))),
         "WebSocket is the browser's two-way channel"),
    Rule("browser-request-reply", (_eq("browser", "request-reply"),),
         (Pick("http"), Pick("ws")),
         "REST over HTTP is what a browser's fetch() speaks"),
    Rule("desktop-service-linux", (_eq("service", True), _eq("os", "linux")),
         (Pick("dbus"),),
         "a long-running desktop service on Linux belongs on D-Bus (activation, "
         "introspection, the session bus every desktop has)"),
    Rule("desktop-service-freebsd", (_eq("service", True), _eq("os", "freebsd")),
         (Pick("dbus"),),
         "a desktop service on FreeBSD belongs on D-Bus too: its desktops run the same "
         "session bus as Linux's"),
    Rule("desktop-service-macos", (_eq("service", True), _eq("os", "darwin")),
         (Pick("xpc"),
          Pick("unix", how="the service listens on a Unix socket and its callers connect to "
                           "it: what ipcwire drives on macOS today")),
         "a long-running service on macOS is an XPC service (launchd starts it on demand)"),
    Rule("network-fire-and-forget", (_eq("distance", "may-move"),
                                     _eq("pattern", "fire-and-forget")),
         (Pick("udp"), Pick("ws")),
         "fire-and-forget across machines: UDP datagrams, no connection, losses accepted"),
    Rule("network-typed-rpc", (_eq("distance", "may-move"), _eq("typed_rpc", True)),
         (Pick("grpc"), Pick("http")),
         "typed RPC across machines: gRPC (unary or streaming calls from a schema)"),
    Rule("network-streaming", (_eq("distance", "may-move"), _eq("pattern", "streaming")),
         (Pick("ws"), Pick("grpc")),
         "streams across machines: WebSocket, or gRPC streaming when a schema helps"),
    Rule("network-request-reply", (_eq("distance", "may-move"),),
         (Pick("http"), Pick("grpc")),
         "request/reply across machines: REST over HTTP, or gRPC unary calls"),
    Rule("one-to-many-bandwidth", (_eq("direction", "one-way"), _eq("receivers", "several"),
                                   _c("throughput", ">=", 1e8)),
         (Pick("shm", how="the producer listens; each consumer connects and gets a ring of "
                          "its own; send each frame on every accepted channel; " + _SHM_PATH),
          Pick("unix", how=_FAN_OUT)),
         "large frames to several consumers: shared memory, one channel (ring) per consumer, "
         "so no frame is copied through the kernel"),
    Rule("bandwidth-over-1GBps", (_c("throughput", ">=", 1e9),),
         (Pick("shm", how=_SHM_PATH), Pick("unix")),
         "over 1 GB/s between processes is shared memory's job (no copy through the kernel)"),
    Rule("latency-under-1us", (_c("latency_us", "<=", 1.0),),
         (Pick("shm", wait="spin", how=_SHM_PATH),),
         "under a microsecond only a spinning shared-memory ring gets there (it keeps a core "
         "busy)"),
    Rule("parent-child", (_eq("relation", "parent-child"), _eq("progress", False)),
         (Pick("pipe", how=_SPAWN), Pick("unix")),
         "a parent and its child share pipes from the start: no names, no cleanup"),
    Rule("parent-child-progress", (_eq("relation", "parent-child"), _eq("progress", True)),
         (Pick("unix"), Pick("pipe", how=_SPAWN)),
         "progress flowing back while the child works wants its own channel: a Unix "
         "socket, leaving stdout to the child's output"),
    Rule("one-to-many", (_eq("direction", "one-way"), _eq("receivers", "several")),
         (Pick("unix", how=_FAN_OUT),
          Pick("dbus", how="listener.publish(obj, topic=...) emits a D-Bus signal; each "
                           "receiver subscribes (where a session bus runs)"),
          Pick("tcp", how=_FAN_OUT)),
         "one producer, several receivers that come and go: a listener each receiver connects "
         "to, one channel per receiver (a FIFO has only one reader)"),
    Rule("latency-under-10us", (_c("latency_us", "<=", 10.0),),
         (Pick("unix"), Pick("shm", wait="hybrid", how=_SHM_PATH)),
         "Unix domain sockets answer within 10 µs on most machines, sleeping when idle"),
    Rule("local-typed-rpc", (_eq("typed_rpc", True),),
         (Pick("grpc", url="grpc+unix:///run/user/1000/app.sock"),
          Pick("http", url="http+unix:///run/user/1000/app.sock")),
         "typed RPC on one machine: gRPC over a Unix socket"),
    Rule("simple-one-way", (_eq("direction", "one-way"), _eq("receivers", "one")),
         (Pick("fifo", how="a FIFO has one reader (a second listener gets AddressInUse): "
                           "for several receivers, say --receivers several"),
          Pick("unix")),
         "simple one-way messages: a named pipe (FIFO), or a Unix socket"),
    Rule("local-default", (),
         (Pick("unix"),
          Pick("tcp", how="TCP for a peer that speaks only TCP; 127.0.0.1 does not cross a "
                          "network namespace (each container has its own loopback): between "
                          "containers, listen on a veth or bridge address routed between them, "
                          "or put a Unix socket in a directory both mount (docs/containers.md)")),
         "unrelated processes on one machine: a Unix domain socket (file permissions and "
         "peer credentials for access control, no port to collide)"),
)  # fmt: skip
