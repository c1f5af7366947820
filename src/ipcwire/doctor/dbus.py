"""``ipcwire doctor dbus://session/NAME`` (or ``system``): is there a bus, does its daemon
answer, who owns the name.

Step by step, each with a deadline, as a client meets them: the bus's address
(``?address=``, ``DBUS_SESSION_BUS_ADDRESS``, ``$XDG_RUNTIME_DIR/bus``; for the system bus
``DBUS_SYSTEM_BUS_ADDRESS`` or /var/run/dbus/system_bus_socket), a connect to its socket (the
daemon behind it is found in /proc: its pid, and whether it is stopped), authentication and
``Hello`` (the blocking driver's :class:`~ipcwire.dbus._conn.BusConnection`), then calls to
the daemon: ``GetNameOwner`` and ``GetConnectionUnixProcessID`` name the process that owns the
name; ``ListActivatableNames`` says whether the bus would start it; ``ListNames`` offers the
names it has that look like the one asked for. With ``listen=True``, a trial ``RequestName``
(released at once) says whether this process may take the name: free, owned (by whom), or
refused by the bus's policy.
"""

from __future__ import annotations

import difflib
import errno
import os
import socket
import stat
import time
from typing import TYPE_CHECKING

from ipcwire._core.url import parse_url
from ipcwire._procfs import (
    describe_pid,
    pids_for_inodes,
    proc_stat,
    unix_socket_files,
    unix_socket_inodes,
)
from ipcwire.doctor._model import Report
from ipcwire.errors import IpcwireError, PermissionDenied, Timeout

if TYPE_CHECKING:  # imported when used: dbus-fast is optional
    from dbus_fast import Message

    from ipcwire.dbus._conn import BusConnection

__all__ = ["check_dbus"]

CONNECT_TIMEOUT = 2.0  # the socket connect, then authentication and Hello, then each call
CALL_TIMEOUT = 2.0
_DO_NOT_QUEUE = 4
_STATES = {"T": "stopped (SIGSTOP?)", "t": "stopped by a debugger", "D": "in disk sleep",
           "Z": "a zombie"}  # fmt: skip


def _address(bus: str, given: str | None) -> tuple[str | None, list[str]]:
    """The bus's address (None when there is none) and where it came from."""
    if given:
        return given, [f"address= {given}"]
    if bus == "system":
        env = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        if env:
            return env, [f"DBUS_SYSTEM_BUS_ADDRESS={env}"]
        return "unix:path=/var/run/dbus/system_bus_socket", [
            "DBUS_SYSTEM_BUS_ADDRESS is not set: the usual /var/run/dbus/system_bus_socket"
        ]
    env = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if env:
        return env, [f"DBUS_SESSION_BUS_ADDRESS={env}"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    ev = ["DBUS_SESSION_BUS_ADDRESS is not set"]
    if not runtime:
        return None, [*ev, "XDG_RUNTIME_DIR is not set"]
    bus_path = os.path.join(runtime, "bus")
    if os.path.exists(bus_path):
        return f"unix:path={bus_path}", [*ev, f"{bus_path} exists"]
    return None, [*ev, f"no {bus_path}"]


def _daemon_pids(kind: str, where: str) -> list[int]:
    """The processes holding the socket the daemon listens on (a path or an abstract name)."""
    if kind == "abstract":
        return pids_for_inodes(unix_socket_inodes("@" + where))
    try:
        st = os.stat(where)
    except OSError:
        return []
    files = unix_socket_files() or {}
    return pids_for_inodes({inode for inode, _ in files.get((st.st_dev, st.st_ino), [])})


def _daemon_text(pids: list[int]) -> str:
    if not pids:
        return "the daemon's process: not visible here"
    out = []
    for pid in pids:
        st = proc_stat(pid)
        state = _STATES.get(st.state, "") if st else ""
        out.append(describe_pid(pid) + (f", {state}" if state else ""))
    return "the daemon: " + "; ".join(out)


def check_dbus(url: str, *, listen: bool = False) -> Report:
    """Diagnose a ``dbus://`` URL for a client (or, with ``listen``, for a listener).

    Raises:
        InvalidURL: not ``dbus://session|system/<bus.name>[/object/path]``.
    """
    report = Report(url)
    try:
        from dbus_fast._private.address import parse_address

        from ipcwire.dbus._proto import HOW_TO_START, parse_target
    except ImportError:
        report.add("dbus.not_installed", "problem", "dbus-fast is not installed",
                   ["import dbus_fast -> ImportError"],
                   "pip install 'ipcwire[system]'")  # fmt: skip
        return report
    endpoint = parse_url(url)
    target = parse_target(endpoint)
    given = endpoint.params.get("address")
    address, ev = _address(target.bus, given if isinstance(given, str) else None)
    if address is None:
        report.add("dbus.no_bus", "problem", "no D-Bus session bus is known to this process",
                   ev, HOW_TO_START)  # fmt: skip
        return report
    try:
        transport, opts = parse_address(address)[0]
    except (ValueError, IndexError) as exc:
        report.add("dbus.bad_address", "problem", f"the bus address {address!r} does not "
                   f"parse: {exc}", ev,
                   "fix the address (unix:path=/run/user/UID/bus)")  # fmt: skip
        return report
    no_daemon_fix = HOW_TO_START if target.bus == "session" else (
        "start the system bus (systemctl start dbus, or service dbus start; in a container, "
        "run dbus-daemon --system) or point DBUS_SYSTEM_BUS_ADDRESS at it")  # fmt: skip
    if transport == "unix":
        kind = "path" if "path" in opts else "abstract"
        where = opts.get("path") or opts.get("abstract", "")
        if not _reach_unix(report, kind, where, ev, no_daemon_fix):
            return report
        daemon = _daemon_pids(kind, where)
        ev.append(_daemon_text(daemon))
    else:
        daemon = []
    _on_the_bus(report, address, target.bus, target.name, url, ev, no_daemon_fix, listen,
                daemon)  # fmt: skip
    return report


def _reach_unix(report: Report, kind: str, where: str, ev: list[str], fix: str) -> bool:
    """Connect to the daemon's socket; False (with the finding) when that fails."""
    if kind == "path":
        try:
            st = os.stat(where)
            ev.append(f"{where}: mode {stat.S_IMODE(st.st_mode):04o} uid {st.st_uid}")
        except OSError as exc:
            report.add("dbus.no_daemon", "problem", f"the bus socket {where} does not exist: "
                       "no daemon runs there", [*ev, f"stat({where}) -> {exc.strerror}"],
                       fix)  # fmt: skip
            return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(where if kind == "path" else "\0" + where)
            return True
        except TimeoutError:
            code = errno.ETIMEDOUT
        except OSError as exc:
            code = exc.errno or errno.EIO
    name = errno.errorcode.get(code, str(code))
    ev = [*ev, f"connect({'@' if kind == 'abstract' else ''}{where}) -> {name}"]
    if code == errno.ECONNREFUSED:
        report.add("dbus.no_daemon", "problem", f"nothing listens on the bus socket {where}: "
                   "the daemon died and left it behind", ev, fix)  # fmt: skip
    elif code in (errno.EACCES, errno.EPERM):
        report.add("dbus.permission", "problem", f"you (uid {os.getuid()}) may not connect to "
                   f"the bus socket {where}", ev, "run as the user whose bus it is, or use a "
                   "bus of your own (dbus-run-session -- your-command)")  # fmt: skip
    elif code in (errno.ETIMEDOUT, errno.EAGAIN):
        report.add("dbus.not_answering", "problem", f"the bus socket {where} does not accept "
                   f"connections within {CONNECT_TIMEOUT:g} s (its backlog is full)",
                   [*ev, _daemon_text(_daemon_pids(kind, where))],
                   "the daemon is stuck: restart it (and everything on that bus)")  # fmt: skip
    else:
        report.add("dbus.no_daemon", "problem", f"cannot connect to the bus socket {where}: "
                   f"{os.strerror(code)}", ev, fix)  # fmt: skip
    return False


def _on_the_bus(
    report: Report,
    address: str,
    bus: str,
    name: str,
    url: str,
    ev: list[str],
    no_daemon_fix: str,
    listen: bool,
    daemon: list[int],
) -> None:
    """Authenticate, say Hello, then ask the daemon about ``name`` (``daemon``: its pids)."""
    from ipcwire.dbus._conn import BusConnection

    started = time.monotonic()
    try:
        conn = BusConnection(address, timeout=CONNECT_TIMEOUT, label=url)
    except PermissionDenied as exc:
        report.add("dbus.refused_user", "problem", f"the {bus} bus took the connection and "
                   f"then dropped it: it does not accept uid {os.getuid()}", [*ev, str(exc)],
                   "run as the user who started the bus, or use a bus of your own "
                   "(dbus-run-session -- your-command)")  # fmt: skip
        return
    except IpcwireError as exc:
        took = time.monotonic() - started
        if isinstance(exc.__cause__, (TimeoutError, Timeout)):
            _not_answering(report, ev, "authentication and Hello", took, daemon)
            return
        report.add("dbus.no_daemon", "problem", f"cannot open a connection to the {bus} bus",
                   [*ev, str(exc)], no_daemon_fix)  # fmt: skip
        return
    try:
        ev.append(f"authenticated (EXTERNAL, uid {os.getuid()}); Hello -> {conn.unique_name}")
        _ask_about(report, conn, bus, name, ev, listen)
    except Timeout:
        _not_answering(report, ev, "a call to the daemon", CALL_TIMEOUT, daemon)
    except IpcwireError as exc:
        report.add("dbus.error", "problem", f"the {bus} bus failed a call: {exc}", ev,
                   "check the daemon's log (journalctl --user -u dbus)")  # fmt: skip
    finally:
        conn.close()


def _not_answering(
    report: Report, ev: list[str], what: str, took: float, daemon: list[int]
) -> None:
    # the daemon's state now, when the deadline has passed, not when its socket answered: a
    # SIGSTOP takes effect when the daemon next runs, which may be after that first reading
    now = _daemon_text(daemon)
    ev = [now if line.startswith("the daemon") else line for line in ev]
    stopped = [p for p in daemon if (st := proc_stat(p)) and st.state in ("T", "t")]
    fix = (
        f"the daemon is stopped: kill -CONT {stopped[0]}"
        if stopped
        else "the daemon is hung: restart it (and everything on that bus)"
    )
    report.add("dbus.not_answering", "problem", f"the bus daemon accepted the connection but "
               f"did not answer {what} within {took:.1f} s", ev, fix,
               pids=stopped)  # fmt: skip


def _call(
    conn: BusConnection, member: str, signature: str = "", body: list[object] | None = None
) -> Message:
    """A call to the bus daemon, with a deadline."""
    from ipcwire.dbus._proto import bus_call

    return conn.call(bus_call(member, signature, body), timeout=CALL_TIMEOUT)


def _ask_about(
    report: Report, conn: BusConnection, bus: str, name: str, ev: list[str], listen: bool
) -> None:
    from ipcwire.dbus._proto import NAME_HAS_NO_OWNER, DbusError

    try:
        owner: str | None = _call(conn, "GetNameOwner", "s", [name]).body[0]
    except DbusError as exc:
        if exc.name != NAME_HAS_NO_OWNER:
            raise
        owner = None
    if owner is not None:
        pid: int | None = _call(conn, "GetConnectionUnixProcessID", "s", [owner]).body[0]
        who = describe_pid(pid) if pid else f"connection {owner}"
        ev = [*ev, f"GetNameOwner({name}) -> {owner}; GetConnectionUnixProcessID -> {pid}"]
        pids = [pid] if pid else []
        if listen:
            fix = f"stop {who} (kill {pid})" if pid else "stop the program that owns it"
            report.add("dbus.in_use", "problem", f"{name} on the {bus} bus is owned by {who}",
                       ev, f"{fix}, or pick another name", pids=pids, owner=owner)  # fmt: skip
        else:
            report.add("dbus.owned", "ok", f"{name} on the {bus} bus is owned by {who}", ev,
                       pids=pids, owner=owner)  # fmt: skip
        return
    ev = [*ev, f"GetNameOwner({name}) -> NameHasNoOwner"]
    if listen:
        _trial_request(report, conn, bus, name, ev)
        return
    activatable = name in _call(conn, "ListActivatableNames").body[0]
    if activatable:
        report.add("dbus.activatable", "info", f"nobody owns {name} now, but the {bus} bus "
                   "starts its service on the first call", ev)  # fmt: skip
        return
    names = [n for n in _call(conn, "ListNames").body[0] if not n.startswith(":")]
    like = difflib.get_close_matches(name, names, n=3, cutoff=0.8)
    if like:
        ev.append("names on this bus like it: " + ", ".join(like))
    report.add("dbus.no_owner", "problem", f"nobody owns {name} on the {bus} bus: no listener "
               "is running", ev, "start the listener first (or pass reconnect=SECONDS to "
               "connect)" + (f"; or did you mean {like[0]}?" if like else ""),
               similar=like)  # fmt: skip


def _trial_request(report: Report, conn: BusConnection, bus: str, name: str, ev: list[str]) -> None:
    """RequestName without queueing, released at once: may this process take ``name``?"""
    from ipcwire.dbus._proto import ACCESS_DENIED, DbusError

    try:
        answer = _call(conn, "RequestName", "su", [name, _DO_NOT_QUEUE]).body[0]
    except DbusError as exc:
        if exc.name != ACCESS_DENIED:
            raise
        where = "/etc/dbus-1/system.d/" if bus == "system" else "/etc/dbus-1/session.d/"
        report.add("dbus.policy", "problem", f"the {bus} bus's policy does not let uid "
                   f"{os.getuid()} own {name}", [*ev, f"RequestName({name}) -> {exc}"],
                   f'allow it with <allow own="{name}"/> in a <policy> of a file in {where}, '
                   "or run as a user the policy allows")  # fmt: skip
        return
    if answer in (1, 4):  # primary owner (or already): give it back at once
        _call(conn, "ReleaseName", "s", [name])
        report.add("dbus.free", "ok", f"{name} is free on the {bus} bus: a listener can take "
                   "it", [*ev, f"RequestName({name}) -> {answer} (released at once)"])  # fmt: skip
        return
    report.add("dbus.in_use", "problem", f"{name} on the {bus} bus was taken meanwhile",
               [*ev, f"RequestName({name}) -> {answer}"],
               "run doctor again to see by whom")  # fmt: skip
