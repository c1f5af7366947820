"""``ipcwire doctor fifo:///path`` (or a FIFO's path): the FIFO, its mode, and who reads it.

A FIFO carries nothing while nobody has it open for reading: ipcwire's writers wait for a
reader until their timeout (``connect()`` ends in ConnectionRefused), a plain ``open()`` or
``echo > fifo`` blocks for ever, and a writer whose reader went away gets EPIPE. So the check
that matters is who holds it open, read from /proc/PID/fd by the FIFO's device and inode
(whatever name the process opened it by), with the access mode from /proc/PID/fdinfo.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Final

from ipcwire._procfs import describe_pid, fifo_holders
from ipcwire.doctor._model import Report
from ipcwire.doctor._pipes import pipe_fill

__all__ = ["blocks_writers", "check_fifo"]

_PAGE: Final = os.sysconf("SC_PAGE_SIZE")  # a pipe's buffer is made of pages


def _who() -> str:
    groups = ",".join(str(g) for g in sorted({os.getgid(), *os.getgroups()}))
    return f"uid {os.getuid()} (groups {groups})"


def _mode(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o} owned by uid {st.st_uid} gid {st.st_gid}"


def blocks_writers(queued: int, capacity: int) -> bool:
    """Whether a pipe holding ``queued`` of ``capacity`` bytes may be full to its writers.

    The kernel stops taking writes once every page of the pipe is in use, and a write goes
    to a new page when it does not fit in the rest of the last one: of two pages in a row,
    the first plus what starts the second is more than a page. So a full pipe holds more
    than half its capacity, less one page (the last may have one byte), and usually well
    short of all of it: 1043402 of 1048576 bytes with 100-byte messages, about half with
    2100-byte ones. ``queued >= capacity`` (the test this replaces) almost never held.
    """
    return queued * 2 > capacity - _PAGE


def check_fifo(
    path: str, *, reply: str | None = None, listen: bool = False, report: Report | None = None
) -> Report:
    """Diagnose the FIFO at ``path`` (and the reply FIFO of ``fifo:///in?reply=/out``).

    ``listen``: for a listener about to read it, rather than a writer.
    """
    report = report or Report(f"fifo://{path}" + (f"?reply={reply}" if reply else ""))
    _check_one(path, report, listen, role="requests")
    if reply is not None:
        _check_one(reply, report, listen, role="replies")
    return report


def _check_one(path: str, report: Report, listen: bool, role: str) -> None:
    # the listener reads the request FIFO and writes the reply FIFO; its client the reverse
    listener_reads = role == "requests"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if listen:
            report.add("fifo.missing", "ok", f"no FIFO at {path}: listen() creates it (0600)",
                       path=path)  # fmt: skip
        else:
            report.add("fifo.missing", "problem", f"no FIFO at {path}: its listener is not "
                       "running (a listener creates it, and removes it when it closes)",
                       [f"stat({path}) -> ENOENT"], "start the listener, or check that both "
                       "sides use the same path", path=path)  # fmt: skip
        return
    except PermissionError:
        report.add("fifo.permission", "problem", f"{_who()} may not reach {path}: a directory "
                   "on the way does not let you through", [f"stat({path}) -> EACCES"],
                   "put the FIFO in a directory both sides can reach (ls -ld each directory "
                   "on the way)", path=path)  # fmt: skip
        return
    if not stat.S_ISFIFO(st.st_mode):
        report.add("fifo.not_a_fifo", "problem", f"{path} exists and is not a FIFO",
                   [f"{path}: {_mode(st)}"], "choose another path, or remove it yourself if "
                   "it is garbage (ipcwire never replaces it)", path=path)  # fmt: skip
        return
    evidence = [f"{path}: FIFO, {_mode(st)}", f"you are {_who()}"]
    report.add("fifo.file", "info", f"{path} is a FIFO ({role})", evidence, path=path,
               mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)  # fmt: skip
    # a writer (the client of the request FIFO) needs write permission; the listener needs
    # the FIFO to be its own, no wider than its mode= (fifo.md)
    if listen and st.st_uid != os.getuid():
        report.add("fifo.permission", "problem", f"listen() uses an existing FIFO only if it "
                   f"is yours: {path} belongs to uid {st.st_uid}", list(evidence),
                   f"run the listener as uid {st.st_uid}, or choose another path",
                   path=path)  # fmt: skip
    elif not listen and not os.access(path, os.W_OK if listener_reads else os.R_OK):
        need = "write" if listener_reads else "read"
        report.add("fifo.permission", "problem", f"permission denied: {_who()} may not "
                   f"{need} {path}", list(evidence), f"run as uid {st.st_uid}, or have the "
                   "listener create it with mode=0o660 and a group you share "
                   f"(ipcwire.listen(url, mode=0o660); chgrp GROUP {path})",
                   path=path)  # fmt: skip
    readers, writers, hidden = fifo_holders(st)
    _report_holders(path, report, listen, listener_reads, readers, writers, hidden)


def _report_holders(
    path: str,
    report: Report,
    listen: bool,
    listener_reads: bool,
    readers: dict[int, int],
    writers: dict[int, int],
    hidden: list[int],
) -> None:
    def named(pids: dict[int, int]) -> str:
        return ", ".join(describe_pid(p) for p in pids) or "nobody"

    evidence = [f"open for reading by: {named(readers)}", f"open for writing by: {named(writers)}"]
    if hidden:
        evidence.append(f"not inspected (another user's, without root): {len(hidden)} "
                        "process(es)")  # fmt: skip
    data: dict[str, Any] = {"path": path, "pids": sorted(readers), "writers": sorted(writers)}
    if not listener_reads:
        # the reply FIFO: read by the connected client, if any; nothing to fault
        report.add("fifo.reply", "info", f"{path} (replies) is open for reading by "
                   f"{named(readers)}", evidence, **data)  # fmt: skip
        return
    if readers:
        fill = [f for f in (pipe_fill(pid, fd) for pid, fd in readers.items()) if f]
        if fill:
            evidence.append(f"{fill[0][0]} of {fill[0][1]} bytes queued")
        if listen:
            report.add("fifo.in_use", "problem", f"{named(readers)} already reads {path}: "
                       "a FIFO has one reader", evidence, "stop that listener, or choose "
                       "another path", **data)  # fmt: skip
        elif fill and blocks_writers(*fill[0]):
            queued, capacity = fill[0]
            pct = queued * 100 // capacity
            report.add("fifo.full", "warning", f"{path} is full or nearly ({pct}% of its "
                       f"{capacity} bytes queued): {named(readers)} holds it "
                       "open for reading but does not read it (or not fast enough), so writers "
                       "block: a pipe takes no more writes once all its pages are in use, which "
                       "with whole messages comes before its last byte (with some sizes at "
                       "half)", evidence,
                       "have the listener read (recv() in a loop, or serve()); see what it "
                       f"is doing instead: ipcwire doctor --pid {min(readers)}",
                       queued=queued, capacity=capacity, **data)  # fmt: skip
        else:
            report.add("fifo.reader", "ok", f"{named(readers)} has {path} open for reading "
                       "(the listener)", evidence, **data)  # fmt: skip
        return
    if listen:
        report.add("fifo.reader", "ok", f"nobody reads {path}: you can listen there (listen() "
                   "uses the FIFO if it is yours and no wider than its mode=)", evidence,
                   **data)  # fmt: skip
        return
    gone = (f"; its writers ({named(writers)}) get EPIPE (ChannelBroken) on their next "
            "write") if writers else ""  # fmt: skip
    report.add(
        "fifo.no_reader",
        "problem",
        f"nobody has {path} open for reading: its listener is not running (killed, or not "
        f"started yet){gone}; a new writer waits in connect() until its timeout "
        "(ConnectionRefused), a plain open() or `echo > fifo` for ever",
        evidence,
        "start the listener (its listen() uses this FIFO if it is yours and no wider than its "
        "mode=), then reconnect the writers",
        **data,
    )
