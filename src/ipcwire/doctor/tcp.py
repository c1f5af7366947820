"""``ipcwire doctor tcp://host:port``: refused, in use (by whom), or listening elsewhere.

A connect attempt says what a client meets (accepted, refused, no answer); /proc/net/tcp says
which local processes listen on the port and on which addresses, which explains the common
surprise of a server bound to 127.0.0.1 while the client dials the machine's other address
(or the other way round). With ``listen=True`` a trial bind says whether a server could start.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from ipcwire._procfs import TcpEntry, pids_for_inodes, proc_stat, tcp_sockets
from ipcwire.doctor._model import Report
from ipcwire.doctor._net import bind_failed, conflicts, covers, is_local, os_error, owner
from ipcwire.unix._namespaces import net_namespace_hint

__all__ = ["check_tcp"]

CONNECT_TIMEOUT = 2.0


def _listener_text(entry: TcpEntry) -> str:
    who = owner(entry.inode, entry.uid)
    host = f"[{entry.host}]" if ":" in entry.host else entry.host
    return f"{who} on {host}:{entry.port}"


def _connect(addr: str, family: int, port: int) -> tuple[int, str, str]:
    """(0, "accepted", the address that accepted) or (errno, name, ``addr``); ETIMEDOUT when
    nothing answered in time. The address that accepted differs from ``addr`` for the
    wildcard: Linux takes a connect to 0.0.0.0 (or ::) to a local address."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect((addr, port))
            peer = str(s.getpeername()[0])
        except TimeoutError:
            return errno.ETIMEDOUT, "no answer", addr
        except OSError as exc:
            code = exc.errno or errno.EIO
            return code, errno.errorcode.get(code, str(code)), addr
    return 0, "accepted", peer


def check_tcp(host: str, port: int, *, listen: bool = False) -> Report:
    """Diagnose ``tcp://host:port`` for a client (or, with ``listen``, for a server)."""
    shown = f"[{host}]" if ":" in host else host
    report = Report(f"tcp://{shown}:{port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        report.add("tcp.resolve", "problem", f"cannot resolve {host}: {exc.strerror}",
                   [f"getaddrinfo({host!r}) -> {exc}"],
                   "check the host name (or use an address)")  # fmt: skip
        return report
    listeners = tcp_sockets(port)
    evidence = [f"listening on port {port} here: " + (
        "; ".join(_listener_text(e) for e in listeners) or "nothing")]  # fmt: skip
    seen: set[str] = set()
    for family, _, _, _, sockaddr in infos:
        addr = str(sockaddr[0])
        if addr in seen:
            continue
        seen.add(addr)
        local = is_local(addr, family, socket.SOCK_STREAM)
        if listen:
            _check_bind(report, addr, family, port, local, listeners, evidence)
        else:
            _check_connect(report, addr, family, port, local, listeners, evidence)
    return report


def _check_connect(
    report: Report,
    addr: str,
    family: int,
    port: int,
    local: bool,
    listeners: list[TcpEntry],
    evidence: list[str],
) -> None:
    code, what, peer = _connect(addr, family, port)
    shown = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    ev = [f"connect({shown}) -> {what}", *evidence]
    if peer != addr:
        ev.insert(1, f"the kernel took {addr} for {peer}: the connection went to {peer}")
    mine = [e for e in listeners if covers(e.host, peer)]
    others = [e for e in listeners if not covers(e.host, peer)]
    if code == 0:
        who = "; ".join(_listener_text(e) for e in mine) if mine else "a server"
        report.add("tcp.live", "ok", f"{shown} accepts connections: {who}", ev,
                   pids=pids_for_inodes({e.inode for e in mine}))  # fmt: skip
        return
    if code == errno.ECONNREFUSED and local and others:
        where = "; ".join(_listener_text(e) for e in others)
        hosts = sorted({e.host for e in others})
        report.add(
            "tcp.other_address",
            "problem",
            f"nothing listens on {shown}, but port {port} is open on another address: {where}",
            ev,
            f"connect to {' or '.join(hosts)} instead, or have the server listen on {addr} "
            f"(or on 0.0.0.0 to accept on every address, with token= and TLS)",
            listening_on=hosts,
            pids=pids_for_inodes({e.inode for e in others}),
        )
        return
    hint = net_namespace_hint() if ipaddress.ip_address(addr).is_loopback else None
    if code in (errno.ECONNREFUSED, errno.ENETUNREACH) and hint:
        ev.append(hint)
        down = ""
        if code == errno.ENETUNREACH:
            down = " (and its loopback interface is down: ip link set lo up)"
        report.add("tcp.other_namespace", "problem", f"nothing listens on {shown} in this "
                   f"network namespace{down}: {addr} here is this namespace's own loopback, not "
                   "the host's", ev, "start the server in this namespace, or reach the host's "
                   "server through an address of a veth pair or bridge between the namespaces "
                   "(or run both in one network namespace)")  # fmt: skip
        return
    if code == errno.ECONNREFUSED:
        where = "on this machine" if local else f"at {addr} (or a firewall rejected it)"
        report.add("tcp.refused", "problem", f"connection refused: nothing listens on port "
                   f"{port} {where}", ev, "start the server, or check the port number")  # fmt: skip
        return
    if code == errno.ETIMEDOUT and local and mine:
        _backlog_full(report, mine, ev)
        return
    if code == errno.ETIMEDOUT:
        report.add("tcp.no_answer", "problem", f"no answer from {shown} within "
                   f"{CONNECT_TIMEOUT:g} s: a firewall drops the packets, or the host is down",
                   ev, "check the firewall rules on both machines and the route")  # fmt: skip
        return
    report.add("tcp.error", "problem", f"connect to {shown} failed: {os_error(code)}", ev,
               "check the address and the network route")  # fmt: skip


def _backlog_full(report: Report, mine: list[TcpEntry], ev: list[str]) -> None:
    """A local listener took no connection in time: not a firewall, its accept queue is full
    (the kernel drops a SYN while it is), so it does not call accept() (stopped, busy, hung)."""
    for e in mine:
        ev.append(f"/proc/net/tcp: {e.rx_queue} connection(s) wait for the accept() of "
                  f"{_listener_text(e)}")  # fmt: skip
    pids = pids_for_inodes({e.inode for e in mine})
    who = "; ".join(_listener_text(e) for e in mine)
    stopped = [p for p in pids if (st := proc_stat(p)) is not None and st.state in "tT"]
    ev += [f"pid {p} is stopped (SIGSTOP, or a debugger)" for p in stopped]
    if stopped:
        fix = f"resume it: kill -CONT {' '.join(map(str, stopped))}"
    elif pids:
        fix = f"see what that server is doing: ipcwire doctor --pid {pids[0]}"
    else:
        fix = "see what that server is doing"
    report.add("tcp.backlog_full", "warning", f"{who} listens, but is not accepting: "
               "its backlog is full, so the kernel drops new connections (no firewall in the "
               "way)", ev, fix, pids=pids)  # fmt: skip


def _check_bind(
    report: Report,
    addr: str,
    family: int,
    port: int,
    local: bool,
    listeners: list[TcpEntry],
    evidence: list[str],
) -> None:
    shown = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
            code = 0
        except OSError as exc:
            code = exc.errno or errno.EIO
    ev = [f"bind({shown}) -> {errno.errorcode.get(code, 'ok') if code else 'ok'}", *evidence]
    if code == 0:
        report.add("tcp.free", "ok", f"{shown} is free: a server can listen there", ev)
        return
    holders = [e for e in listeners if conflicts(e.host, addr)] or listeners
    bind_failed(report, "tcp", code, port=port, addr=addr, shown=shown, local=local,
                evidence=ev, who="; ".join(_listener_text(e) for e in holders) or
                "another process", inodes={e.inode for e in holders})  # fmt: skip
