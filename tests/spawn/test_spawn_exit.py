"""Children still running at interpreter exit are shut down all together, not one by one.

A parent program (a real interpreter) spawns children that ignore the end of stdin and
SIGTERM, a child that exits on EOF but whose grandchild (ignoring SIGTERM) holds its stdout,
and a child that writes a last reply far larger than the pipe, then exits without closing any
of them. Afterwards nothing may be left, and the children's own records prove that the steps
of the ladder were taken together: each stubborn child, on SIGTERM, lists the pipes its parent
still holds (none may be any child's stdin: every stdin was closed before the first SIGTERM)
and the stubborn siblings already dead (none: nobody was killed before everyone had had
SIGTERM). A parent that ran the ladder one child after another fails both.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._util import alive, group, wait_dead
from .lingering import LAST_REPLY

SRC = str(Path(__file__).resolve().parents[2] / "src")
LINGERING = str(Path(__file__).with_name("lingering.py"))

# Python 3.12+ refuses to start a thread during interpreter shutdown; 3.11 does not, so the
# parent refuses it itself once exit has begun (this handler runs before ipcwire's: atexit
# runs handlers in the reverse order of registration).
REFUSE_THREADS_AT_EXIT = """
import atexit, threading

def _refuse(self, *args, **kwargs):
    raise RuntimeError("can't create new thread at interpreter shutdown")

atexit.register(lambda: setattr(threading.Thread, "start", _refuse))
"""

GRANDCHILD = ["sh", "-c", 'trap "" TERM; sleep 3600 & echo "{\\"g\\": $!}"; read line; exit 0']


def run_parent(code: str, log: Path) -> dict[str, Any]:
    """Run ``code`` (after ipcwire is imported) as a parent program; what it printed.

    Its stderr, which the children inherit, goes to a file: a child left behind must not keep
    this test waiting for the end of a pipe.
    """
    script = "import ipcwire\n" + REFUSE_THREADS_AT_EXIT + textwrap.dedent(code)
    errors = log.with_suffix(".stderr")
    with errors.open("w") as err:
        out = subprocess.run(
            [sys.executable, "-c", script, str(log), LINGERING],
            env={**os.environ, "PYTHONPATH": SRC},
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=60,  # the guard; one shared ladder takes about 3 s
            check=False,
        )
    stderr = errors.read_text()
    assert out.returncode == 0, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids the test started indirectly: SIGKILLed at the end if they outlived the check."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        for member in [pid, *group(pid)]:
            if alive(member):
                with contextlib.suppress(OSError):
                    os.kill(member, signal.SIGKILL)


def events(log: Path) -> dict[int, list[dict[str, Any]]]:
    """The log, by child pid."""
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        by_pid.setdefault(event["pid"], []).append(event)
    return by_pid


def assert_nothing_left(pids: list[int]) -> None:
    for pid in pids:
        assert wait_dead(pid), f"process {pid} outlived its parent"
        assert group(pid) == [], f"processes left in group {pid}: {group(pid)}"


def assert_steps_taken_together(log: Path, stubborn: int, chatty: int, noisy: int = 0) -> None:
    by_pid = events(log)
    starts = {pid: evs[0] for pid, evs in by_pid.items()}
    stdins = {ev["stdin"] for ev in starts.values()}
    kinds = sorted(ev["kind"] for ev in starts.values())
    assert kinds == sorted(["stubborn"] * stubborn + ["chatty"] * chatty + ["noisy"] * noisy)
    for pid, evs in by_pid.items():
        names = [ev["event"] for ev in evs]
        if starts[pid]["kind"] in ("chatty", "noisy"):
            # its stdout (stderr) was drained while the others were waited for: it left by itself
            assert names == ["start", "eof", "done"], evs
            continue
        assert "eof" in names, evs
        terms = [ev for ev in evs if ev["event"] == "term"]
        assert len(terms) == 1, f"pid {pid} was sent SIGTERM {len(terms)} times: {evs}"
        still_open = stdins.intersection(terms[0]["held"])
        assert not still_open, f"pid {pid} got SIGTERM while the parent held stdins {still_open}"
        assert terms[0]["dead"] == [], f"pid {pid} got SIGTERM after {terms[0]['dead']} died"


def test_blocking_children_never_closed_are_shut_down_together(
    tmp_path: Path, leftovers: list[int]
) -> None:
    log = tmp_path / "events.jsonl"
    printed = run_parent(
        """
        import json, sys
        log, lingering = sys.argv[1], sys.argv[2]
        kinds = ["stubborn"] * 4 + ["chatty"]
        kids = [ipcwire.spawn([sys.executable, lingering, log, kind]) for kind in kinds]
        kids.append(ipcwire.spawn(GRANDCHILD))
        for ch in kids[:-1]:
            ch.recv(timeout=20)
        grandchild = kids[-1].recv(timeout=20)["g"]
        print(json.dumps({"pids": [ch.pid for ch in kids] + [grandchild]}))
        # and exits without closing any of them
        """.replace("GRANDCHILD", repr(GRANDCHILD)),
        log,
    )
    assert len(printed["pids"]) == 7
    leftovers.extend(printed["pids"])
    assert_nothing_left(printed["pids"])
    assert_steps_taken_together(log, stubborn=4, chatty=1)


def test_asyncio_and_blocking_children_are_shut_down_together(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # Children of both APIs in one program go through the same ladder; among the asyncio ones,
    # one whose aclose() was never awaited (the end of the loop cancelled its ladder), the
    # others never closed, one of them with its stderr going to a callable.
    log = tmp_path / "events.jsonl"
    printed = run_parent(
        """
        import asyncio, json, sys
        from ipcwire import aio
        log, lingering = sys.argv[1], sys.argv[2]
        blocking = [ipcwire.spawn([sys.executable, lingering, log, "stubborn"]) for _ in "ab"]
        for ch in blocking:
            ch.recv(timeout=20)

        lines = open(log + ".lines", "w")

        async def main():
            kinds = ["stubborn"] * 3 + ["chatty"]
            kids = [await aio.spawn([sys.executable, lingering, log, kind]) for kind in kinds]
            # its stderr goes to a callable, fed by the loop, then by the exit
            noisy = [sys.executable, lingering, log, "noisy"]
            kids.append(await aio.spawn(noisy, stderr=lines.write))
            kids.append(await aio.spawn(GRANDCHILD))
            for ch in kids[:-1]:
                await ch.recv(timeout=20)
            grandchild = (await kids[-1].recv(timeout=20))["g"]
            kids[0].close()  # starts its ladder...
            await asyncio.sleep(0)  # ...which begins to wait, and is cancelled with the loop
            return [ch.pid for ch in kids] + [grandchild]

        pids = asyncio.run(main())
        print(json.dumps({"pids": [ch.pid for ch in blocking] + pids}))
        """.replace("GRANDCHILD", repr(GRANDCHILD)),
        log,
    )
    assert len(printed["pids"]) == 9
    leftovers.extend(printed["pids"])
    assert_nothing_left(printed["pids"])
    assert_steps_taken_together(log, stubborn=5, chatty=1, noisy=1)
    assert Path(f"{log}.lines").read_text().endswith("linebye")  # the sink had every line


def test_a_cancelled_asyncio_ladder_does_not_orphan_its_child(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # Before: aclose() not awaited, the loop ended, the cancelled ladder dropped the child
    # (still running, reparented to init).
    printed = run_parent(
        """
        import asyncio, json, sys
        from ipcwire import aio
        log, lingering = sys.argv[1], sys.argv[2]

        async def main():
            ch = await aio.spawn([sys.executable, lingering, log, "stubborn"])
            await ch.recv(timeout=20)
            ch.close()
            await asyncio.sleep(0)
            return ch.pid

        print(json.dumps({"pids": [asyncio.run(main())]}))
        """,
        tmp_path / "events.jsonl",
    )
    leftovers.extend(printed["pids"])
    assert_nothing_left(printed["pids"])
    assert not alive(printed["pids"][0])


def test_exit_waits_for_a_ladder_another_thread_is_running(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # A daemon thread is in close() when the program ends: the exit waits for its ladder
    # (daemon threads stop when the interpreter finalizes, which would orphan the child).
    printed = run_parent(
        """
        import json, sys, threading
        log, lingering = sys.argv[1], sys.argv[2]
        ch = ipcwire.spawn([sys.executable, lingering, log, "stubborn"], exit_timeout=0.5)
        ch.recv(timeout=20)
        threading.Thread(target=ch.close, daemon=True).start()
        while not ch._shut_down:  # the thread has begun the ladder
            pass
        print(json.dumps({"pids": [ch.pid]}))
        """,
        tmp_path / "events.jsonl",
    )
    leftovers.extend(printed["pids"])
    assert_nothing_left(printed["pids"])


def test_exit_waits_for_the_ladder_a_timed_out_request_started(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # request(timeout=) raises at its deadline and leaves the ladder to a thread; a program
    # that ends right after must still not orphan the child.
    printed = run_parent(
        """
        import json, sys
        log, lingering = sys.argv[1], sys.argv[2]
        ch = ipcwire.spawn([sys.executable, lingering, log, "stubborn"], exit_timeout=0.5)
        ch.recv(timeout=20)
        try:
            ch.request({"op": "never answered"}, timeout=0.1)
        except ipcwire.Timeout:
            pass
        assert ch.closed
        print(json.dumps({"pids": [ch.pid]}))
        """,
        tmp_path / "events.jsonl",
    )
    leftovers.extend(printed["pids"])
    assert_nothing_left(printed["pids"])


def test_stderr_left_in_the_pipe_by_a_child_that_exited_reaches_the_sink(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # The child writes its last lines to stderr and exits after the loop ended (so the loop
    # never read them): the exit finds it gone at once, with the lines still in the pipe.
    # Before, the pipe was closed unread.
    log = tmp_path / "events.jsonl"
    printed = run_parent(
        """
        import asyncio, json, os, sys
        from ipcwire import aio
        log = sys.argv[1]
        out = os.open(log + ".lines", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        go_r, go_w = os.pipe()
        child = "import os, sys; os.read(int(sys.argv[1]), 1); sys.stderr.write('last words\\\\n')"

        async def main():
            ch = await aio.spawn(
                [sys.executable, "-c", child, str(go_r)],
                stderr=lambda line: os.write(out, line.encode() + b"\\n"),
                pass_fds=[go_r],
            )
            return ch.pid

        pid = asyncio.run(main())
        os.write(go_w, b"!")  # the loop is gone: nobody reads its stderr now
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # it exited (not reaped)
        print(json.dumps({"pids": [pid]}))
        """,
        log,
    )
    leftovers.extend(printed["pids"])
    assert_nothing_left(printed["pids"])
    assert Path(f"{log}.lines").read_text() == "last words\n"


def test_a_cancelled_asyncio_ladder_keeps_draining_stderr(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # aclose() not awaited, the loop ended while the child wrote far more stderr than the pipe
    # holds: the exit goes on reading it into the sink, and the child leaves by itself. Before,
    # the cancelled ladder closed the pipe: the child's writes failed (EPIPE) and its last
    # lines were lost.
    log = tmp_path / "events.jsonl"
    printed = run_parent(
        """
        import asyncio, json, os, sys
        from ipcwire import aio
        log, lingering = sys.argv[1], sys.argv[2]
        out = os.open(log + ".lines", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        count = 0

        def sink(line):
            global count
            count += 1
            if line == "bye":
                os.write(out, f"{count} lines, the last bye".encode())

        async def main():
            ch = await aio.spawn([sys.executable, lingering, log, "noisy"], stderr=sink)
            await ch.recv(timeout=20)
            ch.close()  # the child sees EOF and begins to write
            await asyncio.sleep(0)  # the ladder begins to wait, and is cancelled with the loop
            return ch.pid

        print(json.dumps({"pids": [asyncio.run(main())]}))
        """,
        log,
    )
    leftovers.extend(printed["pids"])
    assert_nothing_left(printed["pids"])
    names = [ev["event"] for ev in events(log)[printed["pids"][0]]]
    assert names == ["start", "eof", "done"]
    every = LAST_REPLY // 5 + 1  # "line" lines, then "bye"
    assert Path(f"{log}.lines").read_text() == f"{every} lines, the last bye"


def test_a_forked_process_leaves_its_parents_children_alone_at_exit(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # os.fork() copies the parent's list of children to shut down; the copy's exit must not
    # shut them down: they are not its children (it cannot even wait for them, so it took
    # them for exited, waited for the rest of their group, then SIGTERMed and SIGKILLed it).
    printed = run_parent(
        """
        import asyncio, json, os, sys
        from ipcwire import aio
        blocking = ipcwire.spawn(GRANDCHILD)
        grandchildren = [blocking.recv(timeout=20)["g"]]

        async def start():
            return await aio.spawn(GRANDCHILD)

        loop = asyncio.new_event_loop()
        nonblocking = loop.run_until_complete(start())
        grandchildren.append(loop.run_until_complete(nonblocking.recv(timeout=20))["g"])
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # runs the exit handlers, in the forked copy only
        os.waitpid(pid, 0)  # its exit handlers have run

        def running(p):  # not a zombie, not gone
            try:
                stat = open(f"/proc/{p}/stat", "rb").read()
            except OSError:
                return False
            return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")

        pids = [blocking.pid, nonblocking.pid, *grandchildren]
        print(json.dumps({"pids": pids, "running": [running(p) for p in pids]}))
        """.replace("GRANDCHILD", repr(GRANDCHILD)),
        tmp_path / "events.jsonl",
    )
    leftovers.extend(printed["pids"])
    assert printed["running"] == [True] * 4
    assert_nothing_left(printed["pids"])  # the parent's own exit shut them down


def test_a_close_interrupted_by_ctrl_c_leaves_the_child_to_the_exit(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # Ctrl-C while close() waits for a child that ignores the end of its stdin: the terminal's
    # SIGINT reaches the parent only (the child leads its own process group). The child must
    # not outlive the program: the exit finishes its ladder. Before, close() had already taken
    # it off the exit's list, and it ran on, reparented to init. (The child sends the SIGINT
    # itself on the end of its stdin, so it arrives while close() runs.)
    log = tmp_path / "events.jsonl"
    printed = run_parent(
        """
        import json, sys
        log, lingering = sys.argv[1], sys.argv[2]
        argv = [sys.executable, lingering, log, "interrupting"]
        ch = ipcwire.spawn(argv, exit_timeout=60, term_timeout=60)
        ch.recv(timeout=20)
        try:
            ch.close()
        except KeyboardInterrupt:
            print(json.dumps({"pids": [ch.pid]}))
        """,
        log,
    )
    leftovers.extend(printed["pids"])
    assert_nothing_left(printed["pids"])
    names = [ev["event"] for ev in events(log)[printed["pids"][0]]]
    assert names == ["start", "eof", "term"]  # SIGTERM at exit, then SIGKILL


def test_ctrl_c_during_the_exit_kills_the_children_left(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # Ctrl-C while the exit waits for children that ignore the end of their stdin (and
    # SIGTERM): they are SIGKILLed at once, and the program ends without a traceback. Before,
    # the KeyboardInterrupt stopped the exit's ladder half-way and they ran on.
    log = tmp_path / "events.jsonl"
    printed = run_parent(
        """
        import json, sys
        log, lingering = sys.argv[1], sys.argv[2]
        kinds = ["interrupting", "stubborn", "stubborn"]
        kids = [ipcwire.spawn([sys.executable, lingering, log, kind]) for kind in kinds]
        for ch in kids:
            ch.recv(timeout=20)
        print(json.dumps({"pids": [ch.pid for ch in kids]}))
        """,
        log,
    )
    leftovers.extend(printed["pids"])
    assert_nothing_left(printed["pids"])


def test_exit_waits_for_another_threads_ladder_no_longer_than_for_its_own(
    tmp_path: Path, leftovers: list[int]
) -> None:
    # The daemon thread's close() has an exit_timeout of an hour: the exit waits for it as
    # long as for a ladder of its own (a few seconds), then SIGKILLs the group. Before, it
    # waited exit_timeout + term_timeout + 3 s: an hour (here the 60 s guard of run_parent).
    printed = run_parent(
        """
        import json, sys, threading
        log, lingering = sys.argv[1], sys.argv[2]
        argv = [sys.executable, lingering, log, "stubborn"]
        ch = ipcwire.spawn(argv, exit_timeout=3600, term_timeout=3600)
        ch.recv(timeout=20)
        threading.Thread(target=ch.close, daemon=True).start()
        while not ch._shut_down:  # the thread has begun the ladder
            pass
        print(json.dumps({"pids": [ch.pid]}), flush=True)
        """,
        tmp_path / "events.jsonl",
    )
    leftovers.extend(printed["pids"])
    assert_nothing_left(printed["pids"])


def test_close_all_takes_the_steps_together(tmp_path: Path, leftovers: list[int]) -> None:
    # close_all() in a running program: the same proof as at exit (every stdin closed before
    # the first SIGTERM, every SIGTERM sent before anyone was killed); one close() after
    # another fails it.
    from ipcwire.spawn import close_all, spawn

    log = tmp_path / "events.jsonl"
    kinds = ["stubborn"] * 3 + ["chatty"]
    kids = [
        spawn([sys.executable, LINGERING, str(log), kind], exit_timeout=1, term_timeout=1)
        for kind in kinds
    ]
    leftovers.extend(ch.pid for ch in kids)
    for ch in kids:
        ch.recv(timeout=20)
    close_all([*kids, kids[0]])  # a channel twice is closed once
    assert all(ch.closed for ch in kids)
    assert [ch.returncode for ch in kids] == [-signal.SIGKILL] * 3 + [0]
    assert_nothing_left([ch.pid for ch in kids])
    assert_steps_taken_together(log, stubborn=3, chatty=1)
    close_all(kids)  # all closed already: nothing to do
