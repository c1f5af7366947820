"""``ipcwire platforms``: which mechanisms work on this machine, why not, and its limits.

A mechanism is unavailable when the registry says so (wrong OS, missing Python package: the
pip extra to install is named) or when its package's ``probe()`` does (no daemon, no display,
no kernel support). A mechanism package with more than one implementation says which one runs
here in its ``IMPLEMENTATION`` (shared memory: ``"c"``, the compiled ring, or ``"python"``, the
slower pure-Python fallback); the report says so under the table and in ``--json``
(``implementation`` of each mechanism, null for those with only one). The limits are read
from this machine: pipe buffers, POSIX message queues, ``/dev/shm``, Unix socket paths, open
files, inotify.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from ipcwire.cli._console import console as _console
from ipcwire.registry import MechanismSpec, mechanisms

__all__ = ["add_parser", "collect", "limits", "run"]

_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
# sizeof(sockaddr_un.sun_path) minus the terminating NUL
_SUN_PATH = {"linux": 107, "darwin": 103, "freebsd": 103}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "platforms", help="which mechanisms work here, why not, and this machine's limits"
    )
    p.add_argument("--json", action="store_true", help="print JSON for tools")
    return p


# what a package's IMPLEMENTATION means, for the table
_IMPLEMENTATIONS = {"c": "C extension", "python": "pure-Python fallback"}


def _implementation(spec: MechanismSpec) -> str | None:
    """Which implementation of the mechanism runs here, when its package has several."""
    found = getattr(spec.package(), "IMPLEMENTATION", None)
    return found if isinstance(found, str) else None


def _row(spec: MechanismSpec) -> dict[str, Any]:
    reason = spec.unavailable_here()
    return {
        "scheme": spec.scheme,
        "aliases": list(spec.aliases),
        "title": spec.title,
        "available": reason is None,
        "reason": reason,
        "implementation": _implementation(spec),
        "asyncio": spec.aio is not None,
        "capabilities": spec.capabilities.as_dict(),
        "example": spec.example_url,
        "docs": spec.docs,
    }


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _rlimit(name: str) -> dict[str, int | None] | None:
    which = getattr(resource, name, None)
    if which is None:
        return None
    soft, hard = resource.getrlimit(which)
    inf = resource.RLIM_INFINITY
    return {"soft": None if soft == inf else soft, "hard": None if hard == inf else hard}


def _pipe() -> dict[str, int | None]:
    size: int | None = None
    r, w = os.pipe()
    try:
        size = fcntl.fcntl(w, _F_GETPIPE_SZ)
    except OSError:
        size = None
    finally:
        os.close(r)
        os.close(w)
    return {"default_bytes": size, "max_bytes": _read_int("/proc/sys/fs/pipe-max-size")}


def _mqueue() -> dict[str, Any] | None:
    if not os.path.isdir("/proc/sys/fs/mqueue"):
        return None
    from ipcwire.mq import limits as mq_limits

    return mq_limits().as_dict()


def _shm() -> dict[str, int] | None:
    try:
        st = os.statvfs("/dev/shm")  # noqa: S108 - reading its size only
    except OSError:
        return None
    return {"size_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize}


def limits() -> dict[str, Any]:
    """This machine's limits that decide what the mechanisms can do."""
    platform = next((p for p in _SUN_PATH if sys.platform.startswith(p)), None)
    return {
        "pipe_buffer": _pipe(),
        "mqueue": _mqueue(),
        "dev_shm": _shm(),
        "unix_socket_path_max": _SUN_PATH.get(platform or ""),
        "open_files": _rlimit("RLIMIT_NOFILE"),
        "inotify": {
            "max_user_instances": _read_int("/proc/sys/fs/inotify/max_user_instances"),
            "max_user_watches": _read_int("/proc/sys/fs/inotify/max_user_watches"),
        },
    }


def collect() -> dict[str, Any]:
    """Everything ``ipcwire platforms`` reports, as plain data."""
    return {
        "platform": sys.platform,
        "mechanisms": [_row(s) for s in mechanisms()],
        "limits": limits(),
    }


def _size(n: int | None) -> str:
    if n is None:
        return "unlimited"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} B"


def _limit_rows(lim: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    pipe = lim["pipe_buffer"]
    rows.append(
        (
            "pipe buffer",
            f"{_size(pipe['default_bytes'])} (max {_size(pipe['max_bytes'])})",
            "a writer blocks when a reader lags this much (fs.pipe-max-size)",
        )
    )
    mq = lim["mqueue"]
    if mq is not None:
        rows.append(
            (
                "POSIX message queues",
                f"default {mq['msg_default']} x {_size(mq['msgsize_default'])}, max "
                f"{mq['msg_max']} x {_size(mq['msgsize_max'])}, {mq['queues_max']} queues",
                "fs.mqueue.* (sysctl); larger mq messages travel in pieces",
            )
        )
        rows.append(
            (
                "message queue memory",
                _size(mq["rlimit_bytes"]),
                "RLIMIT_MSGQUEUE per user (ulimit -q): each mq channel holds two queues",
            )
        )
    else:
        rows.append(("POSIX message queues", "none", "this system has no POSIX message queues"))
    shm = lim["dev_shm"]
    if shm is not None:
        rows.append(
            (
                "/dev/shm",  # noqa: S108 - a label
                f"{_size(shm['size_bytes'])} ({_size(shm['free_bytes'])} free)",
                "POSIX shared memory lives here (as used by multiprocessing and iceoryx2; "
                "Docker's default is 64 MiB). ipcwire's shm:// rings are memfds, not bound "
                "by it",
            )
        )
    path_max = lim["unix_socket_path_max"]
    rows.append(
        (
            "Unix socket path",
            f"{path_max} bytes" if path_max else "unknown",
            "longer paths cannot be bound; use unix:@name (abstract) on Linux",
        )
    )
    files = lim["open_files"]
    if files is not None:
        rows.append(
            (
                "open files",
                f"{files['soft']} (hard {files['hard']})",
                "every channel holds descriptors (ulimit -n)",
            )
        )
    ino = lim["inotify"]
    if ino["max_user_instances"] is not None:
        rows.append(
            (
                "inotify",
                f"{ino['max_user_instances']} instances, {ino['max_user_watches']} watches",
                "spool wake-ups; past these a spool polls instead",
            )
        )
    return rows


def run(args: argparse.Namespace) -> int:
    data = collect()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    table = Table(title=f"ipcwire mechanisms on {data['platform']}")
    for col in (
        "scheme",
        "mechanism",
        "here",
        "both ways",
        "reliable",
        "crosses machines",
    ):
        table.add_column(col, no_wrap=col == "scheme")
    for m in data["mechanisms"]:
        caps = m["capabilities"]
        table.add_row(
            m["scheme"] + ":",
            m["title"],
            "[green]yes[/]" if m["available"] else "[red]no[/]",
            "yes" if caps["bidirectional"] else "one-way",
            "yes" if caps["reliable"] else "no",
            "yes" if caps["crosses_machines"] else "no",
        )
    console = _console()
    console.print(table)
    # Why not, and the fix, in full (a table column cut them short at 80 columns).
    for m in data["mechanisms"]:
        if m["reason"]:
            console.print(f"[red]{m['scheme']}:[/] {m['reason']}", highlight=False)
    for m in data["mechanisms"]:
        impl = m["implementation"]
        if impl:
            console.print(
                f"{m['scheme']}: the {_IMPLEMENTATIONS.get(impl, impl)} runs here "
                f"(implementation {impl!r})",
                highlight=False,
            )
    limits_table = Table(title="limits on this machine")
    for col in ("what", "here", "why it matters"):
        limits_table.add_column(col)
    for row in _limit_rows(data["limits"]):
        limits_table.add_row(*row)
    console.print(limits_table)
    return 0
