"""POSIX message queues: ``mq:///name``.

Kernel message queues keep message boundaries and priorities, need no daemon and no socket
file, and their descriptors are pollable on Linux. One queue carries messages one way, so an
ipcwire channel is a *pair* of queues:

* ``listen("mq:///app")`` creates the rendezvous queue ``/app`` (mode 0600);
* ``connect("mq:///app")`` creates a private pair of queues (``/app.<pid>.<random>.up`` and
  ``.dn``), announces it on ``/app``, and both sides unlink the pair's names as soon as both
  have it open, so a crash leaves nothing behind. The listener unlinks ``/app`` on close
  (``unlink=False`` keeps it).

A message shorter than the queue's ``msgsize`` (8 KiB by default on Linux) is one kernel
message; a longer one travels in ``msgsize`` pieces and is delivered whole (or not at all), so
channels carry messages up to ``max_frame``. ``maxmsg``/``msgsize`` are checked against
``/proc/sys/fs/mqueue`` before the kernel can answer with a bare EINVAL.
:class:`~ipcwire.mq.blocking.MessageQueue` is the single queue underneath, for work queues
shared by many processes (one kernel message each, so ``msgsize`` is its hard limit).
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ipcwire.registry import Capabilities, MechanismSpec

if TYPE_CHECKING:
    from ipcwire.mq.aio import AioMqChannel, AioMqListener
    from ipcwire.mq.blocking import MqChannel, MqListener

__all__ = [
    "BENCH_URL",
    "SPEC",
    "AioMqChannel",
    "AioMqListener",
    "MqChannel",
    "MqLimits",
    "MqListener",
    "kernel_probe",
    "limits",
    "needs",
    "probe",
    "rlimit_probe",
]

_CLASSES: dict[str, str] = {
    "MqChannel": "ipcwire.mq.blocking",
    "MqListener": "ipcwire.mq.blocking",
    "AioMqChannel": "ipcwire.mq.aio",
    "AioMqListener": "ipcwire.mq.aio",
}


def __getattr__(name: str) -> Any:
    """The channel classes, for type checkers and ``isinstance`` narrowing (``send(priority=)``,
    ``recv_with_priority()`` are theirs, not every channel's), imported on first use: the
    registry imports this module."""
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


_PROC: Final = Path("/proc/sys/fs/mqueue")
# Linux's hard ceilings for a process with CAP_SYS_RESOURCE (include/linux/ipc_namespace.h).
HARD_MSGMAX: Final = 65536
HARD_MSGSIZEMAX: Final = 16 * 1024 * 1024
_CAP_SYS_RESOURCE: Final = 24
# Kernel bytes charged per message slot besides the payload (struct msg_msg + tree node).
SLOT_OVERHEAD: Final = 88


@dataclass(frozen=True, slots=True)
class MqLimits:
    """This machine's POSIX message-queue limits (``/proc/sys/fs/mqueue`` and rlimits).

    ``msg_max``/``msgsize_max`` are the ceilings for an unprivileged process; a process with
    CAP_SYS_RESOURCE may go up to the kernel's hard limits (``privileged``).
    """

    msg_max: int = 10
    msgsize_max: int = 8192
    msg_default: int = 10
    msgsize_default: int = 8192
    queues_max: int = 256
    rlimit_bytes: int | None = 819200  # RLIMIT_MSGQUEUE (ulimit -q); None: unlimited
    privileged: bool = False

    @property
    def maxmsg_ceiling(self) -> int:
        """The largest ``maxmsg`` this process may ask for."""
        return HARD_MSGMAX if self.privileged else self.msg_max

    @property
    def msgsize_ceiling(self) -> int:
        """The largest ``msgsize`` this process may ask for."""
        return HARD_MSGSIZEMAX if self.privileged else self.msgsize_max

    def as_dict(self) -> dict[str, object]:
        """The limits as plain data (for ``ipcwire platforms --json``)."""
        return {name: getattr(self, name) for name in self.__slots__}


def queue_bytes(maxmsg: int, msgsize: int) -> int:
    """What the kernel charges against RLIMIT_MSGQUEUE for one queue (approximately)."""
    return maxmsg * (msgsize + SLOT_OVERHEAD)


def _read_int(name: str, default: int) -> int:
    try:
        return int((_PROC / name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _has_cap_sys_resource() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def limits() -> MqLimits:
    """Read this machine's limits now (they can be changed with sysctl at any time)."""
    d = MqLimits()
    rlim = getattr(resource, "RLIMIT_MSGQUEUE", None)
    rlimit_bytes: int | None = d.rlimit_bytes
    if rlim is not None:
        soft = resource.getrlimit(rlim)[0]
        rlimit_bytes = None if soft == resource.RLIM_INFINITY else soft
    return MqLimits(
        msg_max=_read_int("msg_max", d.msg_max),
        msgsize_max=_read_int("msgsize_max", d.msgsize_max),
        msg_default=_read_int("msg_default", d.msg_default),
        msgsize_default=_read_int("msgsize_default", d.msgsize_default),
        queues_max=_read_int("queues_max", d.queues_max),
        rlimit_bytes=rlimit_bytes,
        privileged=_has_cap_sys_resource(),
    )


def kernel_probe() -> str | None:
    """Why this kernel has no POSIX message queues, or None."""
    if sys.platform.startswith("linux") and not _PROC.is_dir():
        return (
            "this kernel has no POSIX message queues (/proc/sys/fs/mqueue is missing): "
            "it was built without CONFIG_POSIX_MQUEUE"
        )
    return None


def needs(lim: MqLimits) -> tuple[int, int]:
    """The bytes RLIMIT_MSGQUEUE must hold, at this machine's default sizes, for one mq://
    listener (its rendezvous queue) and for one channel (a client's pair of queues)."""
    from ipcwire.mq._proto import RENDEZVOUS_MSGSIZE  # (msgspec only: no optional extra)

    listener = queue_bytes(lim.msg_default, min(RENDEZVOUS_MSGSIZE, lim.msgsize_ceiling))
    return listener, 2 * queue_bytes(lim.msg_default, lim.msgsize_default)


def rlimit_probe(lim: MqLimits | None = None) -> str | None:
    """Why this user's RLIMIT_MSGQUEUE leaves mq:// unusable at the default sizes (a listener
    and one channel do not fit), or None."""
    lim = lim or limits()
    if lim.rlimit_bytes is None:
        return None
    listener, channel = needs(lim)
    if lim.rlimit_bytes >= listener + channel:
        return None
    fails = "every listen()" if lim.rlimit_bytes < listener else "connect() at the default sizes"
    return (
        f"RLIMIT_MSGQUEUE (ulimit -q) is {lim.rlimit_bytes} bytes, under the about "
        f"{listener + channel} bytes one listener and one channel take ({listener} + "
        f"{channel}): {fails} fails with ResourceExhausted. Raise it (ulimit -q "
        f"{max(819200, listener + channel)}, LimitMSGQUEUE= in a systemd unit, docker run "
        f"--ulimit msgqueue=...; ipcwire doctor mq:///NAME shows how)"
    )


def probe() -> str | None:
    """Why POSIX message queues cannot work on this machine right now, or None: no kernel
    support, or an RLIMIT_MSGQUEUE too small for a listener and one channel."""
    return kernel_probe() or rlimit_probe()


BENCH_FRAMING = "one kernel message (in pieces from the queue's msgsize up)"  # ipcwire bench --list

SPEC = MechanismSpec(
    scheme="mq",
    query_options=("maxmsg", "msgsize", "backlog"),
    title="POSIX message queue",
    summary="kernel message queues: boundaries and priorities, no daemon; small messages",
    capabilities=Capabilities(
        bidirectional=True,  # a channel is a pair of queues
        reliable=True,
        ordered=True,  # within one priority; a higher priority overtakes on purpose
        message_boundaries=True,
        max_message_size=None,  # larger than msgsize: sent in pieces, delivered whole
        multi_client=True,
        peer_credentials=False,  # the peer's pid is announced, not vouched for by the kernel
        tells_failure=True,  # a failed end's marker and end pipe say so (_proto.py)
        platforms=("linux",),
    ),
    blocking="ipcwire.mq.blocking",
    aio="ipcwire.mq.aio",
    requires=("posix_ipc",),
    extra="system",
    docs="docs/mechanisms/mq.md",
    example_url="mq:///myapp",
)


def BENCH_URL(workdir: str, serial: int) -> str:
    """A fresh endpoint for one ``ipcwire bench`` measurement."""
    return f"mq:///ipcwire-bench-{os.getpid()}-{serial}"
