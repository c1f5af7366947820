"""Who owns a socket: read from /proc on Linux (best effort; None elsewhere or when hidden).

Used to name the live process behind EADDRINUSE, and by ``ipcwire doctor``.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Mapping",
    "ProcStat",
    "TcpEntry",
    "UdpEntry",
    "UnixSocketEntry",
    "all_pids",
    "children_of",
    "current_syscall",
    "describe_pid",
    "fd_flags",
    "fd_targets",
    "fifo_holders",
    "holders",
    "lock_owners",
    "mapped_files",
    "memory_maps",
    "pids_for_inodes",
    "proc_stat",
    "proc_status",
    "tcp_listener_inodes",
    "tcp_sockets",
    "thread_ids",
    "udp_sockets",
    "unix_socket_files",
    "unix_socket_inodes",
    "unix_socket_table",
    "wchan",
]

_PROC = Path("/proc")


def _read_text(path: Path) -> str:
    """A /proc file as text: its bytes decoded as file names are (os.fsdecode), so a path in
    it that is not valid text (a socket bound at b"/tmp/\\xff.sock", a mapped file, a
    process's name) does not fail the read, and round-trips to the same bytes. Split files
    holding paths at "\\n" only: str.splitlines() also splits at U+0085, U+2028 and others,
    which a file name may hold.

    Raises:
        OSError: it cannot be read (the process is gone, or hidden).
    """
    return os.fsdecode(path.read_bytes())


def unix_socket_inodes(path: str) -> set[int]:
    """Inodes of sockets bound to ``path`` (``@name`` for the abstract namespace)."""
    want = path
    found: set[int] = set()
    try:
        lines = _read_text(_PROC / "net" / "unix").split("\n")[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == want:
            found.add(int(fields[6]))
    return found


def _hex_addr(host: str, port: int, family: socket.AddressFamily) -> str:
    packed = socket.inet_pton(family, host)
    if family == socket.AF_INET:
        return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"
    words = [int.from_bytes(packed[i : i + 4], "little") for i in range(0, 16, 4)]
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def tcp_listener_inodes(port: int, host: str | None = None) -> set[int]:
    """Inodes of TCP sockets listening on ``port`` (on ``host``, or on any address)."""
    found: set[int] = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = _read_text(_PROC / "net" / name).splitlines()[1:]
        except OSError:
            continue
        suffix = f":{port:04X}"
        exact = None
        if host:
            try:
                exact = _hex_addr(host, port, family)
            except OSError:
                exact = None
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A = LISTEN
                continue
            local = fields[1]
            if not local.endswith(suffix):
                continue
            if host and exact is not None and local != exact:
                wildcard = local.split(":")[0].strip("0") == ""
                if not wildcard:
                    continue
            found.add(int(fields[9]))
    return found


def pids_for_inodes(inodes: set[int]) -> list[int]:
    """Processes holding any of these socket inodes open (only those we may inspect)."""
    if not inodes:
        return []
    targets = {f"socket:[{i}]" for i in inodes}
    pids: list[int] = []
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        fd_dir = _PROC / entry / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) in targets:
                    pids.append(int(entry))
                    break
            except OSError:
                continue
    return sorted(pids)


def describe_pid(pid: int) -> str:
    """``pid 1234 (python3 server.py)``, or just ``pid 1234``."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
        cmd = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    except OSError:
        cmd = ""
    if len(cmd) > 80:
        cmd = cmd[:77] + "..."
    return f"pid {pid} ({cmd})" if cmd else f"pid {pid}"


# -- Added for ``ipcwire doctor`` (append-only: the functions above keep their behaviour). ----
# Everything below is best effort: a value that cannot be read is None or empty, never a guess.

_SO_ACCEPTCON = 0x00010000  # /proc/net/unix "Flags": the socket is listening
_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


@dataclass(frozen=True, slots=True)
class UnixSocketEntry:
    """One line of /proc/net/unix: a Unix socket with a name (``@name`` when abstract)."""

    inode: int
    path: str
    listening: bool
    sock_type: int  # 1 stream, 2 datagram, 5 seqpacket


def unix_socket_table() -> list[UnixSocketEntry]:
    """Every named Unix socket of this network namespace (bound, listening or connected)."""
    out: list[UnixSocketEntry] = []
    try:
        lines = _read_text(_PROC / "net" / "unix").split("\n")[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) != 8:
            continue
        try:
            flags, sock_type, inode = int(fields[3], 16), int(fields[4], 16), int(fields[6])
        except ValueError:
            continue
        out.append(UnixSocketEntry(inode, fields[7], bool(flags & _SO_ACCEPTCON), sock_type))
    return out


@dataclass(frozen=True, slots=True)
class TcpEntry:
    """One TCP socket from /proc/net/tcp{,6}: local address, state, owner uid and inode; and
    its receive queue (a listening socket's: the connections waiting for its accept())."""

    host: str
    port: int
    state: str
    uid: int
    inode: int
    rx_queue: int = 0


def _unhex_addr(text: str) -> tuple[str, int]:
    addr, _, port = text.partition(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    host = socket.inet_ntop(socket.AF_INET6, words)
    if host.startswith("::ffff:") and "." in host:
        host = host.removeprefix("::ffff:")
    return host, int(port, 16)


def tcp_sockets(port: int | None = None, *, state: str | None = "LISTEN") -> list[TcpEntry]:
    """TCP sockets (IPv4 and IPv6) on local ``port`` (any port when None), in ``state``
    ("LISTEN" by default; None for every state)."""
    out: list[TcpEntry] = []
    for name in ("tcp", "tcp6"):
        try:
            lines = _read_text(_PROC / "net" / name).splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            st = _TCP_STATES.get(fields[3], fields[3])
            if state is not None and st != state:
                continue
            try:
                host, local_port = _unhex_addr(fields[1])
                rx_queue = int(fields[4].partition(":")[2], 16)
                entry = TcpEntry(host, local_port, st, int(fields[7]), int(fields[9]), rx_queue)
            except (ValueError, OSError):
                continue
            if port is None or local_port == port:
                out.append(entry)
    return out


def fd_targets(pid: int) -> dict[int, str]:
    """What each open descriptor of ``pid`` points at (``pipe:[123]``, ``socket:[456]``,
    a path...); empty when the process is gone or hidden from us."""
    fd_dir = _PROC / str(pid) / "fd"
    out: dict[int, str] = {}
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for name in names:
        try:
            out[int(name)] = os.readlink(fd_dir / name)
        except (OSError, ValueError):
            continue
    return out


def fd_flags(pid: int, fd: int) -> int | None:
    """The open flags of descriptor ``fd`` of ``pid`` (O_WRONLY...), from fdinfo."""
    try:
        for line in _read_text(_PROC / str(pid) / "fdinfo" / str(fd)).splitlines():
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def holders(targets: set[str]) -> dict[int, list[int]]:
    """Processes with a descriptor on any of ``targets`` (readlink texts): pid -> those fds."""
    out: dict[int, list[int]] = {}
    if not targets:
        return out
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        fds = [fd for fd, target in fd_targets(int(entry)).items() if target in targets]
        if fds:
            out[int(entry)] = sorted(fds)
    return out


def all_pids() -> list[int]:
    """Every process id we can see."""
    try:
        return sorted(int(e) for e in os.listdir(_PROC) if e.isdigit())
    except OSError:
        return []


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/PID/stat that diagnosis needs."""

    pid: int
    comm: str
    state: str  # R running, S sleeping, D disk sleep, Z zombie, T stopped...
    ppid: int


def proc_stat(pid: int, tid: int | None = None) -> ProcStat | None:
    """/proc/PID/stat (or one thread's) parsed; None when the process is gone."""
    path = _PROC / str(pid) / ("stat" if tid is None else f"task/{tid}/stat")
    try:
        text = _read_text(path)
    except OSError:
        return None
    left, right = text.find("("), text.rfind(")")
    rest = text[right + 2 :].split()
    try:
        return ProcStat(pid, text[left + 1 : right], rest[0], int(rest[1]))
    except (IndexError, ValueError):
        return None


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a mapping ("SigIgn" -> "0000000000001000"...)."""
    out: dict[str, str] = {}
    try:
        text = _read_text(_PROC / str(pid) / "status")
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def thread_ids(pid: int) -> list[int]:
    """The threads of ``pid`` (the main thread's id is the pid)."""
    try:
        return sorted(int(t) for t in os.listdir(_PROC / str(pid) / "task") if t.isdigit())
    except OSError:
        return []


def wchan(pid: int, tid: int | None = None) -> str | None:
    """The kernel function a sleeping thread waits in (``anon_pipe_write``, ``do_wait``...);
    None when running or hidden."""
    path = _PROC / str(pid) / ("wchan" if tid is None else f"task/{tid}/wchan")
    try:
        text = _read_text(path).strip()
    except OSError:
        return None
    return text if text and text != "0" else None


def current_syscall(pid: int, tid: int | None = None) -> tuple[int, tuple[int, ...]] | None:
    """The system call a blocked thread is in and its arguments (/proc/PID/syscall); None
    when running, not in a system call, or not readable (it needs ptrace access)."""
    path = _PROC / str(pid) / ("syscall" if tid is None else f"task/{tid}/syscall")
    try:
        fields = _read_text(path).split()
    except OSError:
        return None
    if len(fields) < 2 or not fields[0].lstrip("-").isdigit() or int(fields[0]) < 0:
        return None
    try:
        return int(fields[0]), tuple(int(a, 16) for a in fields[1:7])
    except ValueError:
        return None


def children_of(pid: int) -> list[ProcStat]:
    """Processes whose parent is ``pid`` (zombies included)."""
    out = []
    for other in all_pids():
        st = proc_stat(other)
        if st is not None and st.ppid == pid:
            out.append(st)
    return out


def mapped_files(pid: int) -> set[str]:
    """Paths of the files ``pid`` has mapped (/proc/PID/maps; "/memfd:name (deleted)" too)."""
    out: set[str] = set()
    try:
        text = _read_text(_PROC / str(pid) / "maps")
    except OSError:
        return out
    for line in text.split("\n"):
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("/"):
            out.add(fields[5])
    return out


def lock_owners() -> dict[int, list[int]]:
    """Inode -> pids holding a lock on it (flock, POSIX and OFD locks, from /proc/locks)."""
    out: dict[int, list[int]] = {}
    try:
        lines = _read_text(_PROC / "locks").splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            pid = int(fields[4])
            inode = int(fields[5].rsplit(":", 1)[1])
        except (ValueError, IndexError):
            continue
        out.setdefault(inode, []).append(pid)
    return out


@dataclass(frozen=True, slots=True)
class Mapping:
    """One file mapping of a process (/proc/PID/maps): ``map_file`` opens it (root only)."""

    start: int
    end: int
    offset: int
    path: str

    def map_file(self, pid: int) -> str:
        """The /proc/PID/map_files entry through which the mapped file can be opened."""
        return f"/proc/{pid}/map_files/{self.start:x}-{self.end:x}"


def memory_maps(pid: int) -> list[Mapping]:
    """The file mappings of ``pid`` (anonymous memory left out)."""
    out: list[Mapping] = []
    try:
        text = _read_text(_PROC / str(pid) / "maps")
    except OSError:
        return out
    for line in text.split("\n"):
        fields = line.split(None, 5)
        if len(fields) != 6 or not fields[5].startswith("/"):
            continue
        try:
            start, _, end = fields[0].partition("-")
            out.append(Mapping(int(start, 16), int(end, 16), int(fields[2], 16), fields[5]))
        except ValueError:
            continue
    return out


# sock_diag (netlink) constants: include/uapi/linux/{netlink,sock_diag,unix_diag}.h
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_UDIAG_SHOW_VFS = 0x2
_UNIX_DIAG_VFS = 1
_TCP_LISTEN = 10  # Unix sockets report their state with the TCP state numbers
_NLMSG = struct.Struct("=IHHII")
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")


def unix_socket_files() -> dict[tuple[int, int], list[tuple[int, bool]]] | None:
    """Bound Unix sockets by the file they are bound to: ``(st_dev, st_ino)`` of the socket
    file -> [(socket inode, listening)], from the kernel's sock_diag (netlink).

    This finds the socket behind a file even when it was bound under another name and then
    linked into place (ipcwire binds in a private directory), where /proc/net/unix shows only
    the name it was bound to. None when sock_diag is unavailable (not Linux, no unix_diag).
    """
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    except (OSError, AttributeError):
        return None
    out: dict[tuple[int, int], list[tuple[int, bool]]] = {}
    with sock:
        req = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, _UDIAG_SHOW_VFS,
                                  0xFFFFFFFF, 0xFFFFFFFF)  # fmt: skip
        try:
            sock.send(_NLMSG.pack(_NLMSG.size + len(req), _SOCK_DIAG_BY_FAMILY,
                                  _NLM_F_REQUEST_DUMP, 1, 0) + req)  # fmt: skip
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    return out
                if not _parse_diag(data, out):
                    return out
        except OSError:
            return None


def _parse_diag(data: bytes, out: dict[tuple[int, int], list[tuple[int, bool]]]) -> bool:
    """Add one netlink datagram's sockets to ``out``; False at the end of the dump."""
    off = 0
    while off + _NLMSG.size <= len(data):
        length, kind = _NLMSG.unpack_from(data, off)[:2]
        if kind in (_NLMSG_DONE, _NLMSG_ERROR) or length < _NLMSG.size:
            return False
        body = off + _NLMSG.size
        _, _, state, _, inode, _, _ = _UNIX_DIAG_MSG.unpack_from(data, body)
        attr = body + _UNIX_DIAG_MSG.size
        while attr + 4 <= off + length:
            alen, atype = struct.unpack_from("=HH", data, attr)
            if alen < 4:
                break
            if atype == _UNIX_DIAG_VFS and alen >= 12:
                vfs_ino, vfs_dev = struct.unpack_from("=II", data, attr + 4)
                dev = os.makedev(vfs_dev >> 20, vfs_dev & 0xFFFFF)  # kernel dev_t -> st_dev
                out.setdefault((dev, vfs_ino), []).append((inode, state == _TCP_LISTEN))
            attr += (alen + 3) & ~3
        off += (length + 3) & ~3
    return True


def fifo_holders(st: os.stat_result) -> tuple[dict[int, int], dict[int, int], list[int]]:
    """Who has the FIFO ``st`` open, this process apart: (readers, writers) as pid -> one
    of its fds, and the pids whose descriptors may not be looked at (another user's, without
    root). For doctor, and for a fifo listener that cannot make its lock file."""
    readers: dict[int, int] = {}
    writers: dict[int, int] = {}
    hidden: list[int] = []
    me = os.getpid()
    for pid in all_pids():
        if pid == me:
            continue
        targets = fd_targets(pid)
        if not targets and not os.access(f"/proc/{pid}/fd", os.R_OK):
            hidden.append(pid)
            continue
        for fd, target in targets.items():
            if not target.startswith("/"):
                continue  # pipe:[..], socket:[..], anon_inode:..
            try:
                fst = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                continue
            access = (fd_flags(pid, fd) or 0) & os.O_ACCMODE
            if access in (os.O_RDONLY, os.O_RDWR):
                readers.setdefault(pid, fd)
            if access in (os.O_WRONLY, os.O_RDWR):
                writers.setdefault(pid, fd)
    return readers, writers, hidden


@dataclass(frozen=True, slots=True)
class UdpEntry:
    """One UDP socket from /proc/net/udp{,6}: its local address, its peer when connected,
    owner uid, inode, bytes waiting in its receive queue, and datagrams the kernel dropped."""

    host: str
    port: int
    peer: str | None  # "host:port" of a connected socket; None when unconnected
    uid: int
    inode: int
    rx_queue: int
    drops: int


def udp_sockets(port: int | None = None) -> list[UdpEntry]:
    """The UDP sockets (IPv4 and IPv6) bound to local ``port`` (None: all of them).

    (/proc/net/udp's columns: sl, local, remote, st, tx_queue:rx_queue, tr:tm->when,
    retrnsmt, uid, timeout, inode, ref, pointer, drops.)
    """
    out: list[UdpEntry] = []
    for name in ("udp", "udp6"):
        try:
            with open(f"/proc/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 13:
                continue
            try:
                host, local_port = _unhex_addr(fields[1])
                if port is not None and local_port != port:
                    continue
                peer_host, peer_port = _unhex_addr(fields[2])
                peer = None
                if peer_port:
                    peer = f"[{peer_host}]:{peer_port}" if ":" in peer_host else (
                        f"{peer_host}:{peer_port}")  # fmt: skip
                rx = int(fields[4].partition(":")[2], 16)
                out.append(UdpEntry(host, local_port, peer, int(fields[7]), int(fields[9]),
                                    rx, int(fields[12])))  # fmt: skip
            except (ValueError, OSError):
                continue
    return out
