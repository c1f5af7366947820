"""``ipcwire doctor mq:///name`` and ``doctor spool:///dir``: queue depth, limits, owners,
and claims stuck behind consumers that died.

Message queues are read through ``posix_ipc`` (opening an existing queue has no side effect);
who has a queue open is found by its inode among every process's descriptors; an ipcwire
listener's ownership lock (and the note its holder wrote in it) says which listener owns it.
A spool is read from its directories: ``cur/`` holds claims, each flock-ed by its consumer
while it lives (/proc/locks names the holder); an unlocked claim lost its consumer.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import stat
import sys
import time
from pathlib import Path

from ipcwire._procfs import all_pids, describe_pid, fd_targets, lock_owners, proc_stat
from ipcwire.doctor._model import Report

__all__ = ["check_mq", "check_spool", "mq_lock_name", "mq_lock_note", "msgqueue_limit"]

_SPOOL_DIRS = ("tmp", "new", "cur", "dead")


def _lock_path(name: str) -> str | None:
    try:
        from ipcwire.mq._rendezvous import lock_path
    except ImportError as exc:
        if exc.name != "posix_ipc":  # only the optional extra may be missing, not our code
            raise
        return None
    return lock_path(name)


def _lock_held(name: str) -> bool | None:
    """Whether a listener holds the lock of queue ``name`` (see ``mq._rendezvous.lock_held``:
    it sees holders that /proc/locks hides, in a pid namespace this one cannot see)."""
    try:
        from ipcwire.mq._rendezvous import lock_held
    except ImportError as exc:
        if exc.name != "posix_ipc":
            raise
        return None
    return lock_held(name)


def mq_lock_name(path: str) -> str | None:
    """The queue name whose ipcwire listener lock is the file ``path``, or None."""
    base = os.path.basename(path)
    if not base.endswith(".lock") or "." not in base:
        return None
    name = "/" + base.partition(".")[2].removesuffix(".lock")
    return name if _lock_path(name) == path else None


def mq_lock_note(path: str) -> tuple[list[int], dict[str, object]]:
    """Who holds an ipcwire listener lock (pids from /proc/locks), and the holder's note."""
    try:
        st = os.stat(path)
        note = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return [], {}
    return lock_owners().get(st.st_ino, []), note if isinstance(note, dict) else {}


def _queue_holders(name: str, inode: int) -> list[int]:
    """Processes with the queue open (doctor's own descriptor is closed by now)."""
    found = []
    for pid in all_pids():
        for fd, target in fd_targets(pid).items():
            if target != name:
                continue
            try:
                if os.stat(f"/proc/{pid}/fd/{fd}").st_ino == inode:
                    found.append(pid)
                    break
            except OSError:
                continue
    return found


def _unlink_command(name: str) -> str:
    """A shell command that removes the queue ``name``: through this interpreter, which has
    posix_ipc (the ``python`` on PATH may be another one, without it)."""
    code = f"import posix_ipc; posix_ipc.unlink_message_queue({name!r})"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def check_mq(name: str) -> Report:
    """Diagnose the POSIX message queue ``name`` (``/app``) and its ipcwire listener."""
    name = "/" + name.lstrip("/")
    report = Report(f"mq://{name}")
    try:
        import posix_ipc

        from ipcwire.mq._queue import kernel_name  # (it needs posix_ipc)
    except ImportError:
        report.add("mq.unavailable", "problem", "posix_ipc is not installed",
                   fix="pip install 'ipcwire[system]'")  # fmt: skip
        return report
    _limits(report)
    lock = _lock_path(name)
    owners, note = mq_lock_note(lock) if lock and os.path.exists(lock) else ([], {})
    try:
        queue = posix_ipc.MessageQueue(kernel_name(name), read=True, write=False)
    except posix_ipc.ExistentialError:
        fix = "start the listener (ipcwire.listen('mq://" + name + "')), or check the name"
        report.add("mq.missing", "problem", f"there is no message queue {name}",
                   [f"mq_open({name}) -> ENOENT"], fix)  # fmt: skip
        return report
    except posix_ipc.PermissionsError:
        report.add("mq.permission", "problem", f"the queue {name} exists but uid {os.getuid()} "
                   "may not open it", [f"mq_open({name}) -> EACCES"],
                   "run as its owner, or create it with a wider mode")  # fmt: skip
        return report
    try:
        inode = os.fstat(queue.mqd).st_ino
        depth, slots, size = queue.current_messages, queue.max_messages, queue.max_message_size
    finally:
        queue.close()
    users = _queue_holders(name, inode)
    evidence = [
        f"{name}: {depth} of {slots} messages queued, up to {size} bytes each",
        "open in: " + (", ".join(describe_pid(p) for p in users) or "no process"),
    ]
    if lock:
        evidence.append(f"listener lock {lock}: " + (
            f"held by {', '.join(describe_pid(p) for p in owners)}" if owners
            else f"not held (last holder's note: {note or 'none'})"))  # fmt: skip
    data = {"depth": depth, "max_messages": slots, "max_message_size": size, "pids": users}
    if lock and not owners and _lock_held(name) is False:
        pid = note.get("pid")
        if isinstance(pid, int):
            who = f"its listener, pid {pid}, is gone (killed, or it exited without closing)"
        else:
            who = "its listener is gone (it closed with unlink=False, or was killed)"
        kept = f" and the {depth} message(s) in it" if depth else ""
        report.add(
            "mq.listener_gone",
            "problem",
            f"mq://{name} has no listener: {who} and left its queue: connect() is refused "
            f"(ConnectionRefused)",
            evidence,
            f"start the listener again: its listen() adopts the queue{kept}; or, if it is not "
            f"coming back, remove the queue: {_unlink_command(name)} && rm {lock}",
            lock=lock,
            **data,
        )
    if not users:
        who = f"pid {note.get('pid')}" if note.get("pid") else "a process that is gone"
        report.add(
            "mq.orphaned",
            "warning",
            f"nobody has {name} open: it was left by {who}"
            + (f", holding {depth} message(s)" if depth else ""),
            evidence,
            f"the next ipcwire listen() on mq://{name} adopts it; or remove it: "
            f"{_unlink_command(name)}",
            **data,
        )
    elif depth >= slots:
        report.add("mq.full", "problem", f"{name} is full ({depth} of {slots}): nobody is "
                   "receiving, so senders block or fail", evidence,
                   "see what the receiving process does (ipcwire doctor --pid PID), or raise "
                   "maxmsg", **data)  # fmt: skip
    else:
        report.add("mq.queue", "ok", f"{name}: {depth} of {slots} messages queued", evidence,
                   **data)  # fmt: skip
    return report


def _limits(report: Report) -> None:
    from ipcwire.mq import kernel_probe, limits  # (no optional dependency: the registry's)

    reason = kernel_probe()
    if reason is not None:
        report.add("mq.kernel", "problem", reason)
        return
    lim = limits()
    report.add("mq.limits", "info", f"limits: up to {lim.maxmsg_ceiling} messages of "
               f"{lim.msgsize_ceiling} bytes per queue, {lim.queues_max} queues",
               [f"{k} = {v}" for k, v in lim.as_dict().items()],
               "raise them with sysctl fs.mqueue.msg_max / msgsize_max, and ulimit -q",
               **lim.as_dict())  # fmt: skip
    msgqueue_limit(report)


def msgqueue_limit(report: Report) -> None:
    """RLIMIT_MSGQUEUE too small for one mq:// listener (its rendezvous queue), or for a
    listener and one channel (a client's pair of queues), with the default sizes: every
    listen() or connect() would fail with ConfigurationError naming it."""
    from ipcwire.mq import kernel_probe, limits, needs

    lim = limits()
    if lim.rlimit_bytes is None or kernel_probe() is not None:
        return
    listener, channel = needs(lim)
    have = lim.rlimit_bytes
    if have >= listener + channel:
        return
    hard = resource.getrlimit(resource.RLIMIT_MSGQUEUE)[1]
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    if have < listener:
        what = (f"too small for even one mq:// listener (its rendezvous queue needs about "
                f"{listener} bytes): every listen() fails")  # fmt: skip
    else:
        what = (f"too small for a listener and one channel with the default sizes (about "
                f"{listener} + {channel} bytes): connect() fails")  # fmt: skip
    need = max(819200, listener + channel)
    fix = f"raise it: ulimit -q {need}"
    if hard != resource.RLIM_INFINITY and hard < need:
        fix = (f"the hard limit ({hard_text}) is too small too: only root, or whoever starts "
               f"the program, can raise it: prlimit --msgqueue={need}:{need} --pid PID, "
               f"LimitMSGQUEUE={need} in its systemd unit, docker run --ulimit "
               f"msgqueue={need}:{need}, or msgqueue in /etc/security/limits.conf")  # fmt: skip
    report.add("mq.rlimit", "problem", f"RLIMIT_MSGQUEUE (ulimit -q) is {have} bytes: {what}",
               [f"RLIMIT_MSGQUEUE {have} (hard {hard_text}); queue of {lim.msg_default} "
                f"messages: {lim.msg_default} x (msgsize + 88 bytes)"], fix,
               rlimit_bytes=have, listener_bytes=listener,
               channel_bytes=channel)  # fmt: skip


def _producer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) >= 4 else "?"


def check_spool(directory: str) -> Report:
    """Diagnose the spool in ``directory``: its layout, depth, and claims stuck behind
    consumers that died."""
    report = Report(f"spool://{directory}")
    if not os.path.isdir(directory):
        report.add("spool.missing", "problem", f"{directory} does not exist (or is not a "
                   "directory)", fix="the first producer or consumer creates it; check the "
                   "path")  # fmt: skip
        return report
    # (a directory shut to you hides its subdirectories: that is a permission problem)
    missing = [d for d in _SPOOL_DIRS if not os.path.isdir(os.path.join(directory, d))]
    if missing and os.access(directory, os.R_OK | os.X_OK):
        report.add("spool.layout", "problem", f"{directory} is not a spool: no "
                   f"{', '.join(missing)}/", [f"{directory}: {sorted(os.listdir(directory))}"],
                   "point at the spool's own directory")  # fmt: skip
        return report
    if not _spool_permission(report, directory):
        return report
    locks = lock_owners()
    now = time.time()
    counts = {d: len(os.listdir(os.path.join(directory, d))) for d in _SPOOL_DIRS}
    report.add("spool.depth", "info", f"{counts['new']} waiting, {counts['cur']} claimed, "
               f"{counts['dead']} dead", [f"{d}/: {n} file(s)" for d, n in counts.items()],
               counts=counts)  # fmt: skip
    _order(report, directory, locks, counts["new"])
    cur = os.path.join(directory, "cur")
    for name in sorted(os.listdir(cur)):
        path = os.path.join(cur, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        age = now - st.st_mtime
        holders = locks.get(st.st_ino, [])
        evidence = [f"cur/{name}: claimed {age:.0f} s ago, {st.st_size} bytes, sent by "
                    f"producer {_producer(name)} (pid-tag)"]  # fmt: skip
        if holders:
            report.add("spool.claim", "ok", f"cur/{name} is being processed by "
                       f"{', '.join(describe_pid(p) for p in holders)}", evidence,
                       pids=holders)  # fmt: skip
            continue
        evidence.append("no process holds its lock (/proc/locks): its consumer is gone")
        report.add(
            "spool.stuck_claim",
            "problem",
            f"cur/{name} is stuck: its consumer died {age:.0f} s ago without acknowledging it",
            evidence,
            "start a consumer: its first reap returns the message to new/ (delivered again); "
            f"or by hand: mv {path} {os.path.join(directory, 'new', name)}",
            path=path,
            age_s=age,
        )
    if counts["dead"]:
        report.add("spool.dead", "warning", f"{counts['dead']} message(s) given up on in dead/ "
                   "(too many attempts, or too large)", [os.path.join(directory, "dead")],
                   "inspect them, then move them back to new/ or delete them")  # fmt: skip
    return report


def _spool_permission(report: Report, directory: str) -> bool:
    """The spool's directories as its listen() and connect() take them (spool/_store.py):
    never through a symbolic link, another user's only through a group of yours (and a
    group ``mode=``), writable by every user only when ``mode=`` says so, and readable,
    writable and searchable by you. False when one refuses you (reported as a problem)."""
    me, groups = os.geteuid(), {os.getegid(), *os.getgroups()}
    you = f"you are uid {me} (groups {','.join(map(str, sorted(groups)))})"
    shared: list[str] = []
    public: list[str] = []
    for d in (directory, *(os.path.join(directory, sub) for sub in _SPOOL_DIRS)):
        try:
            st = os.lstat(d)
        except OSError:
            continue  # (not there: listen() creates it)
        mode = stat.S_IMODE(st.st_mode)
        where = f"{d}: mode {mode:04o} owned by uid {st.st_uid} gid {st.st_gid}"
        if stat.S_ISLNK(st.st_mode):
            why = "is a symbolic link, which a spool never follows"
            fix = f"point the URL at the spool's real directory ({os.path.realpath(d)})"
        elif st.st_uid != me and st.st_gid not in groups:
            why = f"belongs to uid {st.st_uid} and a group that is not yours"
            fix = (
                f"use a spool directory of your own; or share this one on purpose: as uid "
                f"{st.st_uid} (or root), chgrp -R GROUP {directory} && chmod -R g+rwX,o-rwx "
                f"{directory} with you in GROUP, and mode=0o770 on every side "
                f"(spool://{directory}?mode=0o770)"
            )
        elif not os.access(d, os.R_OK | os.W_OK | os.X_OK):
            why = "does not let you read, write and search it"
            fix = (
                f"as its owner (uid {st.st_uid}) or root: chmod -R u+rwX,g+rwX {directory}, "
                f"and mode=0o770 on every side if you share it through group {st.st_gid}"
            )
        else:
            if st.st_uid != me:
                shared.append(where)
            if mode & 0o002:
                public.append(where)
            continue
        report.add("spool.permission", "problem", f"{d} {why}: ipcwire will not use this "
                   "spool (PermissionDenied)", [where, you], fix, path=d, uid=st.st_uid,
                   gid=st.st_gid, mode=mode)  # fmt: skip
        return False
    if shared:
        report.add("spool.shared", "warning", f"{directory} belongs to another user, shared "
                   "through a group of yours: ipcwire uses it only when mode= gives the group "
                   "access (mode=0o770) on your side too", [*shared, you],
                   f"spool://{directory}?mode=0o770 (or connect(url, mode=0o770))")  # fmt: skip
    if public:
        report.add("spool.world_writable", "warning", f"every user may add messages to "
                   f"{directory}: ipcwire uses it only when mode= says so (mode=0o777)", public,
                   f"chmod -R o-rwx {directory} (as its owner), or pass mode=0o777 on every "
                   "side if that is what you want")  # fmt: skip
    return True


def _order(report: Report, directory: str, locks: dict[int, list[int]], waiting: int) -> None:
    """The spool's .order lock held: consumers take it to list new/ and producers to rename
    into it, each for moments; a holder seen here keeps them all waiting."""
    path = os.path.join(directory, ".order")
    try:
        holders = sorted(set(locks.get(os.stat(path).st_ino, [])))
    except OSError:
        return
    if not holders:
        return
    evidence = [f"{path}: locked by {describe_pid(p)}" + (
        " (stopped)" if (st := proc_stat(p)) is not None and st.state in "tT" else "")
        for p in holders]  # fmt: skip
    who = ", ".join(describe_pid(p) for p in holders)
    stuck = f"{waiting} message(s) wait in new/ but no consumer can take them" if waiting else (
        "sends to it wait for the lock")  # fmt: skip
    report.add(
        "spool.order_held",
        "problem" if waiting else "warning",
        f"{who} holds the spool's .order lock: {stuck} (a consumer holds it only while it "
        "lists new/, a producer while it renames into it)",
        evidence,
        "resume that process if it is stopped (kill -CONT "
        + " ".join(str(p) for p in holders)
        + "), or end it; if it is not stopped, run doctor again: a consumer listing new/ "
        "holds it for a moment",
        pids=holders,
        waiting=waiting,
    )
