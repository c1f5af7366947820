"""D-Bus: ``dbus://session/<bus.name>/<object/path>`` (or ``system``), through dbus-fast.

The desktop's message bus. A listener owns a well-known bus name; channels are method calls on
the ipcwire interface ``io.ipcwire.Channel1`` (request/reply over a channel is a pair of
calls), and :meth:`~ipcwire.dbus.blocking.DbusListener.publish` emits D-Bus signals that
:func:`~ipcwire.dbus.blocking.subscribe` receives (publish/subscribe). Everything passes
through the bus daemon, which checks policy, names the peer's pid and uid, and announces when
a connection goes away. Use it to talk to desktop services, or when you want the bus's naming,
activation and policy; for plain process-to-process traffic a unix:// socket is faster.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from ipcwire.registry import Capabilities, MechanismSpec

if TYPE_CHECKING:
    from ipcwire.dbus.aio import AioDbusChannel, AioDbusListener
    from ipcwire.dbus.blocking import DbusChannel, DbusListener

__all__ = [
    "BENCH_URL",
    "SPEC",
    "AioDbusChannel",
    "AioDbusListener",
    "DbusChannel",
    "DbusListener",
    "probe",
]

_CLASSES: dict[str, str] = {
    "DbusListener": "ipcwire.dbus.blocking",
    "DbusChannel": "ipcwire.dbus.blocking",
    "AioDbusListener": "ipcwire.dbus.aio",
    "AioDbusChannel": "ipcwire.dbus.aio",
}


def __getattr__(name: str) -> Any:
    """The channel classes, for type checkers and ``isinstance`` narrowing (``publish(topic=)``
    is its listeners', not every listener's), imported on first use: the registry imports this
    module."""
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def probe() -> str | None:
    """Why there is no usable session bus here right now, or None (a quick connect only)."""
    try:
        from dbus_fast._private.address import parse_address
    except ImportError:
        return None  # the registry reports the missing package
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not address and runtime and os.path.exists(os.path.join(runtime, "bus")):
        address = f"unix:path={runtime}/bus"
    if not address:
        return (
            "no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is not set (start one with "
            "`dbus-run-session -- CMD`, or `dbus-daemon --session --fork --print-address`)"
        )
    try:
        for transport, opts in parse_address(address):
            if transport != "unix":
                return None
            target = opts.get("path") or "\0" + opts.get("abstract", "")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(target)
            return None
    except (OSError, ValueError) as exc:
        return f"the D-Bus session bus at {address} does not answer ({exc}); is it running?"
    return None


BENCH_FRAMING = "one D-Bus method call per message"  # ipcwire bench --list

SPEC = MechanismSpec(
    scheme="dbus",
    query_options=("address",),
    title="D-Bus",
    summary="the desktop message bus: named services, method calls, signals (pub/sub)",
    capabilities=Capabilities(
        tells_failure=True,  # Fail instead of Close (_proto.py)
        bidirectional=True,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        max_message_size=32 * 1024 * 1024 - 4096,  # the system bus's limit, with headroom
        needs_daemon=True,
        multi_client=True,
        peer_credentials=True,  # the daemon reports each connection's pid and uid
        platforms=("linux", "freebsd"),
    ),
    blocking="ipcwire.dbus.blocking",
    aio="ipcwire.dbus.aio",
    requires=("dbus_fast",),
    extra="system",
    docs="docs/mechanisms/dbus.md",
    example_url="dbus://session/org.example.App/org/example/App",
)


def BENCH_URL(workdir: str, serial: int) -> str:
    """A fresh endpoint for one ``ipcwire bench`` measurement."""
    return f"dbus://session/io.ipcwire.Bench{os.getpid()}.S{serial}/bench"
