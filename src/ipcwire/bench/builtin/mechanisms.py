"""ipcwire's own contenders, derived from the mechanism registry.

For every registered mechanism this makes one contender per API flavour (blocking, and
asyncio when the mechanism has an asyncio driver), per wait policy (when the capabilities list
several: each is passed as ``policy=<policy>`` to ``listen`` and ``connect``, or under the
name the package gives in ``BENCH_WAIT_OPTION``), and a batched
twin measured with ``send_many``/``recv_many``. A mechanism added to the registry later is
measured without any change here, provided the bench knows how to make a fresh address for it:
either a line in :data:`BENCH_URLS`, or a ``BENCH_URL(workdir, serial) -> str`` function in the
mechanism's package (``ipcwire.<name>``). A one-way mechanism whose listening side sends (like
Server-Sent Events) says so with ``BENCH_LISTENER_SENDS = True`` in its package, and one whose
messages are not a 4-byte length prefix and a payload names its framing in ``BENCH_FRAMING``
(with ``BENCH_OVERHEAD``, its bytes per message, when that is a constant).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable
from typing import Any, Final

import ipcwire
from ipcwire.bench.contender import Contender, Task
from ipcwire.bench.payload import MIN_SIZE
from ipcwire.registry import MechanismSpec

__all__ = ["BENCH_URLS", "bench_url", "mechanism_contenders"]

BENCH_URLS: Final[dict[str, Callable[[str, int], str]]] = {
    "unix": lambda workdir, serial: f"unix://{workdir}/ipcwire{serial}.sock",
    "tcp": lambda workdir, serial: "tcp://127.0.0.1:0",
    "ws": lambda workdir, serial: "ws://127.0.0.1:0/bench",
    "ws+unix": lambda workdir, serial: f"ws+unix://{workdir}/ws{serial}.sock",
    "sse+http": lambda workdir, serial: "sse+http://127.0.0.1:0/bench",
    "http": lambda workdir, serial: "http://127.0.0.1:0/bench",
    "grpc": lambda workdir, serial: "grpc://127.0.0.1:0",
    "shm": lambda workdir, serial: f"shm://ipcwire-bench-{os.getpid()}-{serial}",
    "fifo": lambda workdir, serial: (
        f"fifo://{workdir}/f{serial}.fifo?reply={workdir}/f{serial}-reply.fifo"
    ),
    "udp": lambda workdir, serial: "udp://127.0.0.1:0",
}

# Mechanisms whose bench URL above makes them two-way although their capabilities (which
# describe the plain URL) say one-way: a FIFO with ?reply= is a pair of FIFOs. A package says
# the same of its own BENCH_URL with ``BENCH_TWO_WAY = True`` (the clipboard with reply=).
TWO_WAY_URLS: Final[frozenset[str]] = frozenset({"fifo"})

# Mechanisms without addresses, measured by their own contenders (builtin/pipes.py).
HANDLED_ELSEWHERE: Final[frozenset[str]] = frozenset({"pipe"})

# One-way mechanisms whose listening side is the sender (otherwise the connecting side sends).
LISTENER_SENDS: Final[frozenset[str]] = frozenset({"sse+http"})

# The framing of a stream mechanism driven by ipcwire's core; others say theirs in
# ``BENCH_FRAMING`` (and ``BENCH_OVERHEAD``, bytes per message) in their package.
DEFAULT_FRAMING: Final = "4-byte length prefix"


def _url_factory(spec: MechanismSpec) -> Callable[[str, int], str] | None:
    factory = BENCH_URLS.get(spec.scheme)
    if factory is not None:
        return factory
    package = spec.blocking.rpartition(".")[0]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    found = getattr(module, "BENCH_URL", None)
    return found if callable(found) else None


def _package_attr(spec: MechanismSpec, name: str, default: Any) -> Any:
    """``name`` from the mechanism's package (``ipcwire.<name>``), or ``default``."""
    package = spec.blocking.rpartition(".")[0]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return default
    return getattr(module, name, default)


def _wait_option(spec: MechanismSpec) -> str:
    """The keyword that selects a wait policy: ``policy`` unless the mechanism's package says
    otherwise with ``BENCH_WAIT_OPTION``."""
    return str(_package_attr(spec, "BENCH_WAIT_OPTION", "policy"))


def _framing(spec: MechanismSpec) -> tuple[str, int | None]:
    """How messages are delimited on the wire, and the bytes that costs per message: a 4-byte
    length prefix unless the package says otherwise with ``BENCH_FRAMING`` (then
    ``BENCH_OVERHEAD``, or unknown)."""
    label = _package_attr(spec, "BENCH_FRAMING", None)
    if label is None:
        return DEFAULT_FRAMING, 4
    overhead = _package_attr(spec, "BENCH_OVERHEAD", None)
    return str(label), None if overhead is None else int(overhead)


def _listener_sends(spec: MechanismSpec) -> bool:
    if spec.scheme in LISTENER_SENDS:
        return True
    return bool(_package_attr(spec, "BENCH_LISTENER_SENDS", False))


def bench_url(scheme: str, workdir: str, serial: int) -> str:
    """A fresh URL for one measurement of the mechanism with this scheme.

    Raises:
        LookupError: the bench does not know how to make an address for it.
    """
    factory = _url_factory(ipcwire.lookup(scheme))
    if factory is None:
        raise LookupError(f"no bench address for scheme {scheme!r}")
    return factory(workdir, serial)


# -- the sides (run in the worker processes) ---------------------------------------------------
class _Acceptor:
    def __init__(self, listener: Any) -> None:
        self._listener = listener
        self.address: str = listener.url

    def accept(self) -> Any:
        return self._listener.accept(timeout=30.0)

    def close(self) -> None:
        self._listener.close()


def side_a(task: Task, shared: Any) -> _Acceptor:
    opts = task.contender.options
    url = bench_url(opts["scheme"], task.workdir, task.serial)
    return _Acceptor(ipcwire.listen(url, **opts.get("listen", {})))


def side_b(task: Task, address: str, shared: Any) -> Any:
    return ipcwire.connect(address, timeout=10.0, **task.contender.options.get("connect", {}))


class _AioAcceptor:
    def __init__(self, listener: Any) -> None:
        self._listener = listener
        self.address: str = listener.url

    async def accept(self) -> Any:
        return await self._listener.accept(timeout=30.0)

    async def aclose(self) -> None:
        close = getattr(self._listener, "aclose", None) or self._listener.close
        result = close()
        if inspect.isawaitable(result):
            await result


async def aio_side_a(task: Task, shared: Any) -> _AioAcceptor:
    from ipcwire import aio  # type: ignore[attr-defined,unused-ignore]

    opts = task.contender.options
    url = bench_url(opts["scheme"], task.workdir, task.serial)
    return _AioAcceptor(await aio.listen(url, **opts.get("listen", {})))


async def aio_side_b(task: Task, address: str, shared: Any) -> Any:
    from ipcwire import aio  # type: ignore[attr-defined,unused-ignore]

    return await aio.connect(address, timeout=10.0, **task.contender.options.get("connect", {}))


# -- the contenders ---------------------------------------------------------------------------
def _has_module(path: str | None) -> bool:
    if not path:
        return False
    try:
        return importlib.util.find_spec(path) is not None
    except (ImportError, ValueError):
        return False


def mechanism_contenders(notes: list[str]) -> list[Contender]:
    """One contender per registered mechanism, API flavour, wait policy and batching.

    Mechanisms that cannot be measured here add a line to ``notes`` instead.
    """
    out: list[Contender] = []
    for spec in ipcwire.mechanisms():
        if spec.scheme in HANDLED_ELSEWHERE:
            continue
        reason = spec.unavailable_reason()
        if reason is not None:
            notes.append(f"{spec.scheme}: not measured: {reason}")
            continue
        limit = spec.capabilities.max_message_size
        if limit is not None and limit < MIN_SIZE:
            notes.append(f"{spec.scheme}: not measured: it carries no message payload")
            continue
        if not _has_module(spec.blocking):
            notes.append(
                f"{spec.scheme}: not measured: its driver {spec.blocking} is not there yet"
            )
            continue
        if _url_factory(spec) is None:
            notes.append(
                f"{spec.scheme}: not measured: the bench cannot make an address for it "
                f"(add BENCH_URL(workdir, serial) to its package)"
            )
            continue
        caps = spec.capabilities
        kinds: tuple[Any, ...] = ("round_trip", "throughput")
        two_way = spec.scheme in TWO_WAY_URLS or bool(_package_attr(spec, "BENCH_TWO_WAY", False))
        if not caps.bidirectional and not two_way:
            kinds = ("throughput",)
        if not caps.reliable:
            kinds = tuple(k for k in kinds if k != "throughput")
            notes.append(f"{spec.scheme}: unreliable, so only round trips are measured")
        flavours: list[tuple[str, Any, Any]] = [("blocking", side_a, side_b)]
        if _has_module(spec.aio):
            flavours.append(("asyncio", aio_side_a, aio_side_b))
        elif spec.aio:
            notes.append(f"{spec.scheme}: asyncio driver {spec.aio} not found; blocking only")
        policies: tuple[str | None, ...] = caps.wait_policies or (None,)
        for api, a, b in flavours:
            for policy in policies:
                several = len(policies) > 1
                out.extend(_pair(spec, api, a, b, policy, kinds, several=several, two_way=two_way))
    return out


def _pair(
    spec: MechanismSpec,
    api: str,
    a: Any,
    b: Any,
    policy: str | None,
    kinds: tuple[Any, ...],
    *,
    several: bool,
    two_way: bool,
) -> list[Contender]:
    ident = f"ipcwire/{spec.scheme}/{api}" + (f"/{policy}" if several and policy else "")
    title = f"ipcwire {spec.scheme}" + (", asyncio" if api == "asyncio" else "")
    if several and policy:
        title += f", {policy}"
    per_side = {_wait_option(spec): policy} if policy else {}
    framing, overhead = _framing(spec)
    options = {"scheme": spec.scheme, "listen": per_side, "connect": per_side}
    common: dict[str, Any] = {
        "group": "ipcwire",
        "mechanism": spec.scheme,
        "api": api,
        "side_a": a,
        "side_b": b,
        "wait": policy or "park",
        "framing": framing,
        "overhead": overhead,
        "baseline": f"raw/{spec.scheme}" + ("/asyncio" if api == "asyncio" else ""),
        "max_size": spec.capabilities.max_message_size,
        "listener_sends": _listener_sends(spec) and not two_way,
        "options": options,
        "wait_choice": several and policy is not None,
    }
    rows = [Contender(id=ident, title=title, kinds=kinds, note=spec.summary, **common)]
    if "throughput" in kinds:
        rows.append(
            Contender(
                id=ident + "/batched",
                title=title + ", batched",
                kinds=("throughput",),
                batched=True,
                note="send_many / recv_many",
                **common,
            )
        )
    return rows
