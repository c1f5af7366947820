"""``ipcwire doctor udp://host:port``: is anything bound there (which process, on which
address), is it dropping datagrams, and what a client sending there would meet.

UDP has no connection to try, so the evidence is /proc/net/udp{,6}: the sockets bound to the
port, their owners, the address each is bound to (the 127.0.0.1-versus-the-machine's-address
surprise), whether one is connected to a single peer (it then takes datagrams from that peer
only), the bytes waiting in its receive queue, and the kernel's drop counter (datagrams lost
because that queue was full: a reader too slow). Where nothing here is bound (or the host is
another machine), one empty datagram on a connected socket shows what a client meets: the
ICMP "port unreachable" comes back as ECONNREFUSED. Doctor never sends to a socket it sees
bound here, so a live server does not receive doctor's probe. With ``listen=True`` a trial
bind says whether a server could start.
"""

from __future__ import annotations

import errno
import select
import socket

from ipcwire._procfs import UdpEntry, pids_for_inodes, udp_sockets
from ipcwire.doctor._model import Report
from ipcwire.doctor._net import bind_failed, conflicts, covers, is_local, os_error, owner

__all__ = ["check_udp"]

PROBE_TIMEOUT = 1.0  # how long to wait for the ICMP answer (loopback answers at once)
_PROBES = 3  # empty datagrams sent in that time: a remote host may rate-limit its ICMP


def _shown(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _entry_text(entry: UdpEntry) -> str:
    text = f"{owner(entry.inode, entry.uid)} on {_shown(entry.host, entry.port)}"
    if entry.peer:
        text += f" (connected to {entry.peer})"
    return text + f", {entry.rx_queue} bytes queued, {entry.drops} dropped"


def _probe(addr: str, family: int, port: int) -> tuple[int, str]:
    """Send empty datagrams on a connected socket and wait up to PROBE_TIMEOUT for the ICMP
    answer: (ECONNREFUSED, ...) when refused, (0, "no refusal") when nothing came back."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        try:
            s.connect((addr, port))
        except OSError as exc:
            code = exc.errno or errno.EIO
            return code, errno.errorcode.get(code, str(code))
        poller = select.poll()
        poller.register(s, select.POLLIN | select.POLLERR)
        for _ in range(_PROBES):
            try:
                s.send(b"")
                poller.poll(PROBE_TIMEOUT * 1000 / _PROBES)
                s.recv(1)
            except BlockingIOError:
                continue
            except OSError as exc:
                code = exc.errno or errno.EIO
                return code, errno.errorcode.get(code, str(code))
            return 0, "a datagram came back"  # something answered our empty datagram
    return 0, f"no refusal within {PROBE_TIMEOUT:g} s"


def check_udp(host: str, port: int, *, listen: bool = False) -> Report:
    """Diagnose ``udp://host:port`` for a sender (or, with ``listen``, for a server)."""
    report = Report(f"udp://{_shown(host, port)}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        report.add("udp.resolve", "problem", f"cannot resolve {host}: {exc.strerror}",
                   [f"getaddrinfo({host!r}) -> {exc}"],
                   "check the host name (or use an address)")  # fmt: skip
        return report
    entries = udp_sockets(port)
    evidence = [f"/proc/net/udp: bound to port {port} here: "
                + ("; ".join(_entry_text(e) for e in entries) or "nothing")]  # fmt: skip
    seen: set[str] = set()
    for family, _, _, _, sockaddr in infos:
        addr = str(sockaddr[0])
        if addr in seen:
            continue
        seen.add(addr)
        local = is_local(addr, family, socket.SOCK_DGRAM)
        if listen:
            _check_bind(report, addr, family, port, local, entries, evidence)
        else:
            _check_send(report, addr, family, port, local, entries, evidence)
    _check_drops(report, entries, evidence)
    return report


def _check_send(
    report: Report,
    addr: str,
    family: int,
    port: int,
    local: bool,
    entries: list[UdpEntry],
    evidence: list[str],
) -> None:
    shown = _shown(addr, port)
    mine = [e for e in entries if covers(e.host, addr)]
    open_ = [e for e in mine if e.peer is None]
    if open_:
        who = "; ".join(_entry_text(e) for e in open_)
        report.add("udp.bound", "ok", f"{shown} is bound: {who}", list(evidence),
                   pids=pids_for_inodes({e.inode for e in open_}))  # fmt: skip
        return
    if mine:  # bound, but only by sockets connected to one peer each
        peers = sorted({e.peer or "" for e in mine})
        report.add(
            "udp.connected_elsewhere",
            "problem",
            f"the only sockets bound to {shown} are connected to {', '.join(peers)}: they "
            f"take datagrams from that peer only, and other senders are refused",
            list(evidence),
            "the receiver should bind without connecting (ipcwire.listen), or send from "
            f"{' or '.join(peers)}",
            pids=pids_for_inodes({e.inode for e in mine}),
            connected_to=peers,
        )
        return
    code, what = _probe(addr, family, port)
    ev = [f"empty datagram to {shown} on a connected socket -> {what}", *evidence]
    others = [e for e in entries if e.peer is None]
    if local and others:
        hosts = sorted({e.host for e in others})
        where = "; ".join(_entry_text(e) for e in others)
        report.add(
            "udp.other_address",
            "problem",
            f"nothing is bound to {shown}, but port {port} is bound on another address: {where}",
            ev,
            f"send to {' or '.join(hosts)} instead, or have the server listen on {addr} (or "
            f"on 0.0.0.0 to receive on every address)",
            listening_on=hosts,
            pids=pids_for_inodes({e.inode for e in others}),
        )
        return
    if code == errno.ECONNREFUSED:
        where = "on this machine" if local else f"at {addr} (its ICMP port unreachable came back)"
        report.add("udp.refused", "problem", f"nothing is bound to port {port} {where}: "
                   "datagrams sent there are lost, and a connected socket gets ECONNREFUSED",
                   ev, "start the server, or check the port number")  # fmt: skip
        return
    if code == 0 and local:  # nothing in /proc, yet no refusal: another network namespace?
        report.add("udp.unconfirmed", "warning", f"nothing bound to {shown} shows in "
                   f"/proc/net/udp, yet no refusal came back ({what})", ev,
                   "check whether the server runs in another network namespace "
                   "(a container)")  # fmt: skip
        return
    if code == 0:
        report.add("udp.unconfirmed", "info", f"{shown} did not refuse ({what}); UDP has no "
                   "handshake, so a server may be there, or a firewall drops the datagram or "
                   "the refusal", ev, "if nothing arrives, check the server (ipcwire doctor "
                   f"udp://{shown} --listen on that machine) and the firewalls "
                   "between")  # fmt: skip
        return
    report.add("udp.unreachable", "problem", f"sending to {shown} failed: {os_error(code)}",
               ev, "check the address and the network route")  # fmt: skip


def _check_drops(report: Report, entries: list[UdpEntry], evidence: list[str]) -> None:
    for e in entries:
        if not e.drops:
            continue
        who = owner(e.inode, e.uid)
        report.add(
            "udp.drops",
            "warning",
            f"the kernel dropped {e.drops} datagram(s) for {who}'s socket on "
            f"{_shown(e.host, e.port)}: its receive buffer was full, the reader is too slow",
            [
                f"/proc/net/udp: inode {e.inode}: drops {e.drops}, {e.rx_queue} bytes queued now",
                *evidence,
            ],
            "read faster (one thread or task per socket doing nothing but recv), send slower, "
            "or raise the socket's SO_RCVBUF (and sysctl net.core.rmem_max); ipcwire's own "
            "per-peer queue drops are counted in statistics().dropped",
            pids=pids_for_inodes({e.inode}),
            drops=e.drops,
            rx_queue=e.rx_queue,
        )


def _conflicts(entry: UdpEntry, addr: str) -> bool:
    """Whether a socket bound to ``entry.host`` keeps a bind to ``addr`` on the same port."""
    return conflicts(entry.host, addr)


def _check_bind(
    report: Report,
    addr: str,
    family: int,
    port: int,
    local: bool,
    entries: list[UdpEntry],
    evidence: list[str],
) -> None:
    shown = _shown(addr, port)
    with socket.socket(family, socket.SOCK_DGRAM) as s:  # as ipcwire.listen binds: no reuse
        try:
            s.bind((addr, port))
            code = 0
        except OSError as exc:
            code = exc.errno or errno.EIO
    ev = [f"bind({shown}) -> {errno.errorcode.get(code, 'ok') if code else 'ok'}", *evidence]
    if code == 0:
        others = [e for e in entries if not _conflicts(e, addr)]
        where = "; also bound on other addresses: " + "; ".join(map(_entry_text, others))
        report.add("udp.free", "ok", f"{shown} is free: a server can listen there"
                   + (where if others else ""), ev)  # fmt: skip
        return
    holders = [e for e in entries if _conflicts(e, addr)] or entries
    bind_failed(report, "udp", code, port=port, addr=addr, shown=shown, local=local,
                evidence=ev, who="; ".join(_entry_text(e) for e in holders) or
                "another process", inodes={e.inode for e in holders})  # fmt: skip
