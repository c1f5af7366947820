"""``ipcwire doctor``: what is wrong, the evidence, and the fix.

::

    from ipcwire.doctor import diagnose
    report = diagnose("unix:///run/user/1000/app.sock")
    for finding in report.problems:
        print(finding.summary, finding.evidence, finding.fix)

One module per family of checks: :mod:`~ipcwire.doctor.unix`, :mod:`~ipcwire.doctor.tcp`,
:mod:`~ipcwire.doctor.pid` (pipes, zombies, signals, endpoints), :mod:`~ipcwire.doctor.shm`,
:mod:`~ipcwire.doctor.queues` (mq and spool), :mod:`~ipcwire.doctor.fifo`,
:mod:`~ipcwire.doctor.udp`, :mod:`~ipcwire.doctor.dbus`,
:mod:`~ipcwire.doctor.clipboard`,
:mod:`~ipcwire.doctor.machine`.
"""

from __future__ import annotations

import os
import stat

from ipcwire._core.url import parse_url
from ipcwire.doctor._model import Finding, Report
from ipcwire.doctor.clipboard import check_clipboard
from ipcwire.doctor.dbus import check_dbus
from ipcwire.doctor.fifo import check_fifo
from ipcwire.doctor.machine import check_machine
from ipcwire.doctor.pid import check_pid
from ipcwire.doctor.queues import check_mq, check_spool
from ipcwire.doctor.shm import check_shm, check_shm_url
from ipcwire.doctor.tcp import check_tcp
from ipcwire.doctor.udp import check_udp
from ipcwire.doctor.unix import check_unix
from ipcwire.errors import InvalidURL

__all__ = [
    "Finding",
    "Report",
    "check_clipboard",
    "check_dbus",
    "check_fifo",
    "check_machine",
    "check_mq",
    "check_pid",
    "check_shm",
    "check_shm_url",
    "check_spool",
    "check_tcp",
    "check_udp",
    "check_unix",
    "diagnose",
]

# Schemes that run over a Unix socket or TCP: their endpoint is checked as such.
_OVER_UNIX = frozenset({"unix", "ws+unix", "http+unix", "grpc+unix"})
_OVER_TCP = frozenset({"tcp", "ws", "wss", "http", "https", "sse+http", "sse+https", "grpc",
                       "grpcs"})  # fmt: skip
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "sse+http": 80,
                  "sse+https": 443}  # fmt: skip


def diagnose(target: str, *, listen: bool = False) -> Report:
    """Run the checks that fit ``target``: a URL (unix, tcp and what runs over them, udp, dbus,
    clipboard:, shm, mq, spool, fifo) or a bare path (a socket, or a FIFO).

    ``listen``: diagnose for a server about to listen there, rather than a client.

    Raises:
        InvalidURL: a scheme doctor has no checks for.
    """
    if target.startswith(("/", "./", "@")):
        if _is_fifo(target):
            return check_fifo(os.path.abspath(target), listen=listen)
        return check_unix(target, listen=listen)
    endpoint = parse_url(target)
    scheme = endpoint.scheme
    if scheme in _OVER_UNIX:
        path = endpoint.path or endpoint.host
        # what connect() and listen() refuse too; "unix:" was checked as the current
        # directory ("is a directory, not a socket")
        if scheme == "unix" and endpoint.host:
            raise InvalidURL(
                f"{target}: a Unix socket URL has no host; write unix:///{endpoint.host}"
                f"{endpoint.path} (three slashes for an absolute path)"
            )
        if not path or path == "@":
            raise InvalidURL(f"{target} names no socket path: write {scheme}:///absolute/path.sock")
        return check_unix(path, listen=listen)
    if scheme in _OVER_TCP:
        if endpoint.port == 0:
            raise InvalidURL(
                f"{target}: port 0 asks the kernel for any free port when a server listens, so "
                f"there is nothing to check there; give the port the server uses (or will use)"
            )
        port = endpoint.port or _DEFAULT_PORTS.get(scheme)
        if port is None:
            raise InvalidURL(f"{target} has no port: write {scheme}://host:port")
        return check_tcp(endpoint.host or "127.0.0.1", port, listen=listen)
    if scheme == "clipboard":
        return check_clipboard(target)
    if scheme == "dbus":
        return check_dbus(target, listen=listen)
    if scheme == "udp":
        if not endpoint.port:  # none, or 0 (any free port: nothing to check there)
            raise InvalidURL(
                f"{target}: give the port the server uses (or will use): udp://host:port"
            )
        return check_udp(endpoint.host or "127.0.0.1", endpoint.port, listen=listen)
    if scheme == "shm":
        return check_shm_url(target, listen=listen)
    if scheme == "mq":
        name = endpoint.path or endpoint.host
        if not name.strip("/") or "/" in name.strip("/"):
            raise InvalidURL(
                f"{target}: a POSIX message queue name is one component without '/', written "
                f"mq:///name"
            )
        return check_mq(name)
    if scheme == "spool":
        if not endpoint.path or endpoint.host:
            raise InvalidURL(
                f"{target}: write a spool as spool:///absolute/dir (or spool:relative/dir)"
            )
        return check_spool(endpoint.path)
    if scheme == "fifo":
        reply = endpoint.params.get("reply") or None
        if (
            endpoint.host
            or not endpoint.path.startswith("/")
            or (reply is not None and not reply.startswith("/"))
        ):
            raise InvalidURL(
                f"{target}: write a FIFO as fifo:///absolute/path (and ?reply=/absolute/path)"
            )
        return check_fifo(endpoint.path, reply=reply, listen=listen)
    raise InvalidURL(
        f"ipcwire doctor has no checks for {scheme}: URLs yet; it knows unix (and ws+unix, "
        f"http+unix, grpc+unix), tcp (and ws, http, sse+http, grpc), udp, dbus, clipboard:, "
        f"shm, mq, spool and fifo"
    )


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.lstat(path).st_mode)
    except OSError:
        return False
