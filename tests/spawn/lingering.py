"""A child for the interpreter-exit tests: records what it sees in a shared log (one JSON line
per event, appended with O_APPEND), and is slow to leave.

``python lingering.py LOG stubborn``: ignores the end of stdin and SIGTERM (only SIGKILL ends
it). On SIGTERM it records which pipes the parent still holds (their inode numbers) and which
other stubborn children were already dead: the proof that the parent closed every child's
stdin before it sent any SIGTERM, and sent every SIGTERM before it killed anyone.

``python lingering.py LOG chatty``: on the end of stdin, writes a last reply far larger than
the pipe, then exits by itself (if the parent drains its stdout meanwhile).

``python lingering.py LOG noisy``: the same with its stderr: many lines, the last ``bye``.

``python lingering.py LOG interrupting``: as ``stubborn``, but on the end of stdin it first
sends SIGINT to its parent (Ctrl-C while the parent waits for it to leave).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

LAST_REPLY = 4 * 1024 * 1024


def record(log: str, **event: Any) -> None:
    line = json.dumps({"pid": os.getpid(), **event}) + "\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def pipes_held_by(pid: int) -> list[int]:
    """Inode numbers of the pipes process ``pid`` has open."""
    held = []
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("pipe:["):
            held.append(int(target[6:-1]))
    return held


def running(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def stubborn_siblings(log: str) -> list[int]:
    pids = []
    for line in Path(log).read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "start" and event["kind"] in ("stubborn", "interrupting"):
            pids.append(event["pid"])
    return [p for p in pids if p != os.getpid()]


def main() -> None:
    log, kind = sys.argv[1], sys.argv[2]
    parent = os.getppid()

    def on_term(signum: int, frame: FrameType | None) -> None:
        dead = [p for p in stubborn_siblings(log) if not running(p)]
        record(log, event="term", held=pipes_held_by(parent), dead=dead)

    signal.signal(signal.SIGTERM, on_term)
    record(log, event="start", kind=kind, stdin=os.fstat(0).st_ino)
    os.write(1, b"{}\n")  # ready
    while os.read(0, 65536):
        pass
    record(log, event="eof")
    if kind == "interrupting":
        os.kill(parent, signal.SIGINT)
    if kind in ("chatty", "noisy"):
        last = b"x" * LAST_REPLY if kind == "chatty" else b"line\n" * (LAST_REPLY // 5) + b"bye\n"
        view = memoryview(last)
        while view:
            view = view[os.write(1 if kind == "chatty" else 2, view) :]
        record(log, event="done")
        return
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
