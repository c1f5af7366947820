"""``ipcwire doctor unix:///path``: why connecting to (or listening at) a Unix socket fails.

Checked in the order a connect() meets them: the path's length, every directory on the way
(exists, lets the caller through), the file (exists, is a socket), its mode and owner against
the caller, and finally whether a process listens on it (live: which pid; stale: nobody).
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import stat
from pathlib import Path
from typing import Final

from ipcwire._core.handshake import refusal
from ipcwire._procfs import (
    describe_pid,
    pids_for_inodes,
    unix_socket_files,
    unix_socket_table,
)
from ipcwire.doctor._model import Report
from ipcwire.unix._namespaces import is_mount_point, unmapped_uid
from ipcwire.unix._socket import MAX_PATH, UNSEEN, peer_info

__all__ = ["check_unix", "probe"]

_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _who() -> str:
    groups = ",".join(str(g) for g in sorted({os.getgid(), *os.getgroups()}))
    return f"uid {os.getuid()} (groups {groups})"


def _run_as(uid: int) -> str:
    """The fix "run as uid N", unless N is the overflow uid of an unmapped owner."""
    if unmapped_uid(uid):
        return (
            f"the socket's owner is not mapped into this user namespace (the kernel shows it "
            f"as uid {uid}, the overflow uid; running as {uid} would not help): map the "
            f"owner's uid into this namespace (unshare --map-users, newuidmap, or the "
            f"container's uid map)"
        )
    return f"run as uid {uid}"


def _mode(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o} owned by uid {st.st_uid} gid {st.st_gid}"


def probe(sockaddr: str | bytes) -> tuple[int, int | None]:
    """Try a non-blocking connect: (0, listener pid) when something accepts, else the errno
    (ECONNREFUSED: nothing listens; EAGAIN: it listens but its backlog is full; EACCES...)."""
    code, pid, _ = _probe(sockaddr, wait=0)
    return code, pid


# How long a probe waits for an ipcwire server's refusal: it refuses a uid outside its
# allow_uids as soon as it accepts (docs/protocol.md section 3), before any message.
REFUSAL_WAIT: Final = 0.5
_NOT_REFUSED: Final = (
    f"no refusal in {REFUSAL_WAIT} s (an ipcwire server refuses a uid outside its allow_uids "
    f"at once)"
)


def _probe(sockaddr: str | bytes, *, wait: float) -> tuple[int, int | None, str | None]:
    """:func:`probe`, then, when it was accepted, up to ``wait`` seconds for the server's
    refusal: (errno or 0, listener pid, the refusal's text or None)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(sockaddr)
        pid = peer_info(sock, "").pid
        return 0, pid, _refusal(sock, wait) if wait else None
    except OSError as exc:
        return exc.errno or errno.EIO, None, None
    finally:
        sock.close()


def _refusal(sock: socket.socket, wait: float) -> str | None:
    """The error an ipcwire server sent instead of a handshake, if it sent one in ``wait``."""
    if not select.select([sock], [], [], wait)[0]:
        return None
    try:
        data = sock.recv(65536)
    except OSError:
        return None
    # one frame, length-prefixed or one NDJSON line, holding {"ipcwire", "error", "code"}
    for body in (data[4 : 4 + int.from_bytes(data[:4], "big")], data.split(b"\n")[0]):
        try:
            obj = json.loads(body)
        except ValueError:
            continue
        error = refusal(obj, "")
        if error is not None:
            return str(obj["error"])
    return None


def _refused(
    report: Report, where: str, who: str, pid: int | None, text: str, evidence: list[str]
) -> None:
    evidence.append(f"the server answered at once: {text}")
    report.add(
        "unix.refused",
        "problem",
        f"{who} listens on {where} but refuses {_who()}",
        evidence,
        f"add uid {os.getuid()} to the server's allow_uids (ipcwire.listen(url, "
        f"allow_uids=[..., {os.getuid()}])), or run as a user it allows",
        pid=pid,
        uid=os.getuid(),
    )


def _holders(name: str) -> tuple[list[int], list[int]]:
    """Pids with a socket bound to ``name``: (listening, bound but not listening).

    /proc/net/unix names the path a socket was bound to; a socket bound elsewhere and then
    linked into place (as ipcwire does) is found through its file by sock_diag.
    """
    table = [(e.inode, e.listening) for e in unix_socket_table() if e.path == name]
    if not name.startswith("@"):
        try:
            st = os.stat(name)
            table += (unix_socket_files() or {}).get((st.st_dev, st.st_ino), [])
        except OSError:
            pass
    listening = pids_for_inodes({inode for inode, up in table if up})
    bound = pids_for_inodes({inode for inode, up in table if not up})
    return listening, bound


def _pids_text(pids: list[int]) -> str:
    return ", ".join(describe_pid(p) for p in pids)


def _check_abstract(name: str, report: Report, listen: bool) -> None:
    code, pid, refused = _probe(b"\0" + name.encode(), wait=0 if listen else REFUSAL_WAIT)
    listening, _ = _holders("@" + name)
    pid = pid or (listening[0] if listening else None)
    evidence = [f"connect(@{name}) -> {errno.errorcode.get(code, 'ok') if code else 'accepted'}"]
    if code in (0, errno.EAGAIN):
        who = describe_pid(pid) if pid else UNSEEN
        if refused is not None:
            _refused(report, f"@{name}", who, pid, refused, evidence)
        elif listen:
            report.add("unix.in_use", "problem", f"the abstract name @{name} is held by {who}",
                       evidence, "stop that process, or choose another name", pid=pid)  # fmt: skip
        else:
            evidence.append(_NOT_REFUSED)
            report.add("unix.live", "ok", f"{who} is listening on @{name}", evidence, pid=pid)
        return
    if listen:
        report.add("unix.free", "ok", f"nothing holds @{name}: you can listen there", evidence)
        return
    report.add(
        "unix.missing",
        "problem",
        f"nothing listens on the abstract name @{name}",
        evidence,
        "start the server; abstract names live in the network namespace, so a server in "
        "another container (or network namespace) cannot be reached by this name",
    )


def _check_directories(path: str, report: Report, listen: bool) -> bool:
    """Every directory from / to the socket's: True when the caller gets through them."""
    parent = Path(os.path.abspath(path)).parent
    chain = [*reversed(parent.parents), parent]
    for directory in chain:
        try:
            st = os.stat(directory)
        except FileNotFoundError:
            report.add(
                "unix.directory_missing",
                "problem",
                f"the directory {directory} does not exist",
                [f"stat({directory}) -> ENOENT"],
                f"create it (mkdir -p {parent}; mode 0700 if only you should reach the "
                f"socket), or fix the path",
            )
            return False
        except PermissionError:
            continue  # reported for the directory above it
        if not stat.S_ISDIR(st.st_mode):
            report.add("unix.directory_missing", "problem", f"{directory} is not a directory",
                       [f"{directory}: {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a directory')}"],
                       "fix the path")  # fmt: skip
            return False
        if not os.access(directory, os.X_OK):
            report.add(
                "unix.directory_denied",
                "problem",
                f"the directory {directory} does not let {_who()} through",
                [f"{directory}: {_mode(st)}", f"you are {_who()}"],
                f"put the socket in a directory both sides can reach, or open this one: "
                f"chmod o+x {directory} (or g+x with a shared group: chgrp GROUP {directory})",
                directory=str(directory),
                mode=stat.S_IMODE(st.st_mode),
                uid=st.st_uid,
            )
            return False
    if listen and not os.access(parent, os.W_OK | os.X_OK):
        st = os.stat(parent)
        if os.statvfs(parent).f_flag & os.ST_RDONLY:  # access() folds EROFS into "denied"
            report.add("unix.directory_readonly", "problem", f"the file system of {parent} is "
                       "read-only, so you cannot listen there", [f"statvfs({parent}): ST_RDONLY"],
                       "listen in a directory on a writable file system, such as "
                       "$XDG_RUNTIME_DIR or a tmpfs mounted for sockets")  # fmt: skip
            return False
        report.add(
            "unix.directory_readonly",
            "problem",
            f"you may not create files in {parent}, so you cannot listen there",
            [f"{parent}: {_mode(st)}", f"you are {_who()}"],
            "listen in a directory you own, such as $XDG_RUNTIME_DIR",
        )
        return False
    return True


def check_unix(path: str, *, listen: bool = False, report: Report | None = None) -> Report:
    """Diagnose the Unix socket at ``path`` (``@name`` for an abstract name).

    ``listen``: the caller wants to listen there (a live listener is then the problem),
    rather than connect (a live listener is what it needs).
    """
    report = report or Report(f"unix://{path}" if not path.startswith("@") else f"unix:{path}")
    if path.startswith("@"):
        _check_abstract(path[1:], report, listen)
        return report
    size = len(os.fsencode(path))
    if size > MAX_PATH:
        report.add(
            "unix.path_too_long",
            "problem",
            f"the path is {size} bytes, over the kernel's limit of {MAX_PATH} for Unix sockets",
            [f"len({path!r}) = {size} bytes; sizeof(sun_path) - 1 = {MAX_PATH}"],
            "use a shorter directory ($XDG_RUNTIME_DIR or /tmp) or an abstract name (unix:@name)",
            bytes=size,
            limit=MAX_PATH,
        )
        return report
    if not os.path.isabs(path):
        report.add("unix.relative", "info", f"relative path: resolved against {os.getcwd()}",
                   [f"{path} -> {os.path.abspath(path)}"])  # fmt: skip
    if not _check_directories(path, report, listen):
        return report
    _check_file(os.path.abspath(path), report, listen)
    return report


def _check_file(path: str, report: Report, listen: bool) -> None:
    listening, bound = _holders(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if listening:
            report.add(
                "unix.unlinked",
                "problem",
                f"no file at {path}, yet {_pids_text(listening)} listens on a socket bound "
                f"there: its file was removed, so no client can reach it",
                [f"lstat -> ENOENT; /proc/net/unix lists a listening socket at {path}"],
                "restart that server (it recreates the file); find who removed it",
                pids=listening,
            )
        elif orphans := _unlinked_listeners(path):
            _report_unlinked(path, orphans, report, listen)
        elif listen:
            report.add("unix.free", "ok", f"nothing at {path}: you can listen there")
        else:
            report.add(
                "unix.missing",
                "problem",
                f"no socket file at {path}",
                [f"lstat({path}) -> ENOENT", "no socket in /proc/net/unix is bound there"],
                "start the server, or check that both sides use the same path",
            )
        return
    if not stat.S_ISSOCK(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a socket")
        report.add(
            "unix.not_a_socket",
            "problem",
            f"{path} exists and is {kind}, not a socket",
            [f"{path}: {kind}, {_mode(st)}, {st.st_size} bytes"],
            "choose another path, or remove it yourself if it is garbage (ipcwire never does)",
        )
        return
    evidence = [f"{path}: socket, {_mode(st)}", f"you are {_who()}"]
    if listen and not os.access(path, os.W_OK):
        _foreign_for_listen(path, st, evidence, listening, bound, report)
        return
    if not os.access(path, os.W_OK):
        report.add(
            "unix.permission",
            "problem",
            f"permission denied: connecting needs write permission on the socket file, and "
            f"{_who()} has none",
            evidence,
            f"{_run_as(st.st_uid)}, or have the server listen with mode=0o660 and a group "
            f"you share (ipcwire.listen(url, mode=0o660); chgrp GROUP {path})",
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
        )
        return
    _check_listener(path, st, evidence, listening, bound, report, listen)


def _not_removable(path: str, st: os.stat_result) -> bool:
    """Whether a sticky directory keeps you from removing another user's file there."""
    try:
        parent = os.stat(os.path.dirname(path))
    except OSError:
        return False
    me = os.getuid()
    return bool(parent.st_mode & stat.S_ISVTX) and me not in (0, st.st_uid, parent.st_uid)


def _foreign_for_listen(
    path: str,
    st: os.stat_result,
    evidence: list[str],
    listening: list[int],
    bound: list[int],
    report: Report,
) -> None:
    """To listen at another user's socket file: what listen() says, and whether it is stale
    (the kernel's sock_diag tells, without a probe we may not make)."""
    # the sockets themselves, not their pids: another user's fds are hidden from us
    by_file = unix_socket_files()
    sockets = (by_file or {}).get((st.st_dev, st.st_ino), [])
    sockets += [(e.inode, e.listening) for e in unix_socket_table() if e.path == path]
    stale: bool | None = False
    if by_file is None:
        state, stale = "maybe stale", None
        evidence.append("this kernel has no sock_diag: whether it is stale cannot be told")
    elif sockets:
        state = "in use" if any(up for _, up in sockets) else "bound by a live process"
        pids = listening or bound
        who = _pids_text(pids) if pids else "a process you may not inspect"
        evidence.append(f"sock_diag: a socket is bound to it ({who})")
    else:
        state, stale = "stale", True
        evidence.append(f"sock_diag: no socket is bound to {path}: nothing listens, it is stale")
    if not os.access(path, os.W_OK):
        why = (f"a socket of uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o} that "
               "you may not even probe; it belongs to someone else")  # fmt: skip
    else:
        parent = os.path.dirname(path)
        sticky = stat.S_IMODE(os.stat(parent).st_mode)
        why = (f"a socket of uid {st.st_uid} in {parent}, a sticky directory (mode "
               f"{sticky:04o}) where you may not remove it")  # fmt: skip
    fix = "choose another path"
    if stale is not False:
        fix += f"; or, if it is stale, have uid {st.st_uid} (or root) remove it: rm {path}"
    report.add(
        "unix.permission",
        "problem",
        f"listen() refuses {path} ({state}): {why}",
        evidence,
        fix,
        stale=stale,
        uid=st.st_uid,
        mode=stat.S_IMODE(st.st_mode),
    )


def _unlinked_listeners(path: str) -> dict[int, str]:
    """Listening sockets that ipcwire bound for a file in ``path``'s directory whose file is
    gone from it: socket inode -> the private name it was bound to.

    ipcwire binds at ``<dir>/.iwXXXX/s`` and links that into place (unix/_socket.py), so
    /proc/net/unix names the private name, never the path; sock_diag gives each socket's file
    (device, inode), which no entry of the directory has once the file was removed.
    """
    parent = os.path.dirname(path)
    candidates = {
        e.inode: e.path
        for e in unix_socket_table()
        if e.listening
        and os.path.basename(e.path) == "s"
        and os.path.dirname(os.path.dirname(e.path)) == parent
        and os.path.basename(os.path.dirname(e.path)).startswith(".iw")
    }
    by_file = unix_socket_files()
    if not candidates or by_file is None:
        return {}
    file_of = {inode: ident for ident, socks in by_file.items() for inode, _ in socks}
    present = set()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return {}  # a directory we may pass through but not list: cannot tell
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        present.add((st.st_dev, st.st_ino))
    return {i: name for i, name in candidates.items() if file_of.get(i) not in present}


def _report_unlinked(path: str, orphans: dict[int, str], report: Report, listen: bool) -> None:
    pids = pids_for_inodes(set(orphans))
    who = _pids_text(pids) if pids else UNSEEN
    evidence = [f"lstat({path}) -> ENOENT"] + [
        f"/proc/net/unix: socket {inode} listens, bound as {name} (ipcwire's private name, "
        f"then linked into {os.path.dirname(path)}); no file in that directory is it any more"
        for inode, name in sorted(orphans.items())
    ]
    one = "this one" if len(orphans) == 1 else "one of these"
    kill = f"kill {' '.join(str(p) for p in pids)}" if pids else "stop that server"
    if listen:
        report.add("unix.unlinked", "warning", f"no file at {path}, but {who} still listens "
                   f"on an ipcwire socket whose file in that directory was removed (probably "
                   f"{one}): a new server here would run beside it", evidence,
                   f"if it is the server you are starting again, stop it first ({kill})",
                   pids=pids)  # fmt: skip
        return
    report.add(
        "unix.unlinked",
        "problem",
        f"no file at {path}, but {who} still listens on an ipcwire socket whose file in that "
        f"directory was removed (probably {one}): no client can reach it",
        evidence,
        f"restart that server: stop it ({kill}), then start it again (its listen() makes the "
        f"file); starting another one beside it leaves two. Find out who removed the file",
        pids=pids,
    )


def _check_listener(
    path: str,
    st: os.stat_result,
    evidence: list[str],
    listening: list[int],
    bound: list[int],
    report: Report,
    listen: bool,
) -> None:
    code, pid, refused = _probe(path, wait=0 if listen else REFUSAL_WAIT)
    evidence.append(f"connect() -> {errno.errorcode.get(code, str(code)) if code else 'accepted'}")
    pid = pid or (listening[0] if listening else None)
    if code in (0, errno.EAGAIN):
        who = describe_pid(pid) if pid else UNSEEN
        if refused is not None:
            _refused(report, path, who, pid, refused, evidence)
        elif code == errno.EAGAIN:
            report.add("unix.backlog_full", "warning",
                       f"{who} listens on {path} but is not accepting: its backlog is full",
                       evidence, "see what that process is doing: ipcwire doctor --pid "
                       f"{pid}" if pid else None, pid=pid)  # fmt: skip
        elif listen:
            report.add("unix.in_use", "problem", f"{who} is listening on {path}", evidence,
                       f"stop it (kill {pid}), or choose another path" if pid else
                       "stop that server, or choose another path", pid=pid)  # fmt: skip
        else:
            evidence.append(_NOT_REFUSED)
            report.add("unix.live", "ok", f"{who} is listening on {path}", evidence, pid=pid)
        return
    if code == errno.ECONNREFUSED:
        evidence.append(f"/proc/net/unix: no listening socket is bound to {path}")
        if bound:
            # Not stale: a live process holds the file's socket (bound, listen() not called,
            # or a datagram socket). Removing the file would cut that process off.
            evidence.append(f"bound but not listening in {_pids_text(bound)}")
            report.add(
                "unix.not_listening",
                "problem",
                f"{_pids_text(bound)} holds a socket bound to {path} but does not listen on it",
                evidence,
                "that process has not called listen() (yet), or its socket is not a stream "
                f"socket: see what it is doing (ipcwire doctor --pid {bound[0]}); do not remove "
                "the file while it runs",
                pids=bound,
            )
            return
        fix = f"rm {path}, then start the server (ipcwire's listen() removes stale files itself)"
        if is_mount_point(path):
            evidence.append(f"/proc/self/mountinfo: {path} is a mount point")
            report.add("unix.mounted_file", "problem", f"nothing listens on {path}, and it is "
                       "a mount point: a socket file bind-mounted on its own goes stale when "
                       "the server restarts (its listen() makes a new file, which this mount "
                       "does not show)", evidence, "bind-mount the directory that holds the "
                       "socket, not the socket file, and start this container or sandbox "
                       "again (rm here fails: Device or resource busy)")  # fmt: skip
        elif listen and _not_removable(path, st):
            _foreign_for_listen(path, st, evidence, [], bound, report)
        elif listen:
            report.add("unix.stale", "info", f"{path} is stale (nothing listens): ipcwire's "
                       "listen() will remove it", evidence, pids=bound)  # fmt: skip
        else:
            report.add("unix.stale", "problem", f"{path} is stale: nothing listens on it (left "
                       "by a server that died?)", evidence, fix, pids=bound)  # fmt: skip
        return
    if code in (errno.EACCES, errno.EPERM):
        report.add("unix.permission", "problem", f"connect() was refused: {os.strerror(code)}",
                   evidence, f"{_run_as(st.st_uid)}, or have the server listen with "
                   "mode=0o660 and a group you share")  # fmt: skip
        return
    report.add("unix.error", "problem", f"connect() failed: {os.strerror(code)}", evidence)
