"""The asyncio graceful shutdown as docs/asyncio.md shows it (a plain call, then serve()):
every cleanup runs and the exit code stands, though serve() returns, and the main coroutine
with it, as soon as the shutdown has closed the listener.

Before, asyncio.run() then cancelled the shutdown's task: on SIGTERM or Ctrl-C the example
printed "finally blocks run" but never "cache flushed", exited 0 whatever exit_code said,
and left its pid file (a newcomer's walkthrough). Each test runs the example from the docs
page in a real process and sends it real signals.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

import ipcwire

from .test_signals import ENV

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncio.md"
CALL = "graceful_shutdown(flush_cache, server)"
FLUSH = 'async def flush_cache() -> None:\n    print("cache flushed")\n'


def example(sock: Path, call: str = CALL) -> str:
    """The example of "Shutdown on SIGTERM and Ctrl-C", with its socket at ``sock`` and its
    graceful_shutdown call replaced by ``call``."""
    section = DOC.read_text().split("## Shutdown on SIGTERM and Ctrl-C", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert CALL in code and "/tmp/app.sock" in code
    return code.replace("/tmp/app.sock", str(sock)).replace(CALL, call)


def start(code: str, sock: Path) -> subprocess.Popen[str]:
    """Run ``code``; return once it serves (an echo came back: graceful_shutdown() ran)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**ENV, "PYTHONUNBUFFERED": "1"},  # (the example's prints do not flush)
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with ipcwire.connect(f"unix://{sock}", codec="json", reconnect=10, timeout=10) as ch:
            ch.send("ping")
            assert ch.recv(timeout=10) == "ping"
    except BaseException:
        proc.kill()
        print(proc.communicate(timeout=10))
        raise
    return proc


def ended(proc: subprocess.Popen[str]) -> tuple[int, list[str], str]:
    out, err = proc.communicate(timeout=20)
    return proc.returncode, out.splitlines(), err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_documented_example_runs_its_cleanup(sig: signal.Signals, tmp_path: Path) -> None:
    sock = tmp_path / "app.sock"
    proc = start(example(sock), sock)
    proc.send_signal(sig)
    code, out, err = ended(proc)
    assert (code, sorted(out)) == (0, ["cache flushed", "finally blocks run"]), err
    assert not sock.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_exit_code_and_pid_file(sig: signal.Signals, tmp_path: Path) -> None:
    sock, pid = tmp_path / "app.sock", tmp_path / "app.pid"
    pid.write_text("1\n")
    call = f"graceful_shutdown(flush_cache, server, {str(pid)!r}, exit_code=3)"
    proc = start(example(sock, call), sock)
    proc.send_signal(sig)
    code, out, err = ended(proc)
    assert (code, sorted(out)) == (3, ["cache flushed", "finally blocks run"]), err
    assert not pid.exists()


def test_a_cleanup_that_awaits_finishes_and_a_second_signal_is_ignored(
    tmp_path: Path,
) -> None:
    """The cleanup after the listener's awaits a task it starts, which awaits work in a
    thread (the default executor) and the test's word on stdin, which comes only after a
    second SIGTERM. main() returns once that task has started, so asyncio.run() ends (and
    cancels the tasks left) while it runs: the cleanup still finishes, and the second signal
    neither kills the process nor starts another shutdown."""
    sock, flushed = tmp_path / "app.sock", tmp_path / "flushed"
    flush = f"""async def flush_cache() -> None:
    print("flushing")
    await asyncio.create_task(write())  # (a task the cleanup starts is not cancelled either)
    print("cache flushed")

started = asyncio.Event()

async def write() -> None:
    started.set()
    word = await asyncio.to_thread(sys.stdin.readline)
    await asyncio.to_thread(Path({str(flushed)!r}).write_text, word)
"""
    code = example(sock, "graceful_shutdown(flush_cache, server, exit_code=3)")
    assert FLUSH in code
    code = "import sys\nfrom pathlib import Path\n" + code.replace(FLUSH, flush)
    end = '        print("finally blocks run")\n'
    assert end in code  # main() returns while that task is running:
    code = code.replace(end, end + "        await started.wait()\n")
    proc = start(code, sock)
    assert proc.stdout is not None and proc.stdin is not None
    proc.send_signal(signal.SIGTERM)
    seen = [proc.stdout.readline().strip() for _ in range(2)]
    assert sorted(seen) == ["finally blocks run", "flushing"]
    proc.send_signal(signal.SIGTERM)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    code_, out, err = ended(proc)
    assert (code_, out) == (3, ["cache flushed"]), err
    assert flushed.read_text() == "go\n"
    assert "Traceback" not in err and "destroyed" not in err, err


def test_async_with_form_unchanged(tmp_path: Path) -> None:
    sock, pid = tmp_path / "app.sock", tmp_path / "app.pid"
    pid.write_text("1\n")
    code = f"""
import asyncio
from ipcwire import aio
from ipcwire.signals.aio import graceful_shutdown
async def handle(ch):
    async for msg in ch:
        await ch.send(msg)
async def flush_cache():
    print("cache flushed")
async def main():
    server = await aio.listen("unix://{sock}", codec="json")
    async with graceful_shutdown(flush_cache, server, {str(pid)!r}, exit_code=3):
        try:
            await server.serve(handle)
        finally:
            print("finally blocks run")
    print("not reached")
asyncio.run(main())
"""
    proc = start(code, sock)
    proc.send_signal(signal.SIGTERM)
    code_, out, err = ended(proc)
    assert (code_, sorted(out)) == (3, ["cache flushed", "finally blocks run"]), err
    assert not pid.exists()


def test_sigint_not_handled_is_still_keyboard_interrupt(tmp_path: Path) -> None:
    """With signals=("TERM",), Ctrl-C is asyncio.run()'s KeyboardInterrupt, as before."""
    sock = tmp_path / "app.sock"
    proc = start(example(sock, 'graceful_shutdown(flush_cache, server, signals=("TERM",))'), sock)
    proc.send_signal(signal.SIGINT)
    code, out, err = ended(proc)
    assert code == -signal.SIGINT and "KeyboardInterrupt" in err, err
    assert out == ["finally blocks run"]


def test_blocking_form_unchanged(tmp_path: Path) -> None:
    sock, pid = tmp_path / "app.sock", tmp_path / "app.pid"
    pid.write_text("1\n")
    code = f"""
import ipcwire
def handle(ch):
    for msg in ch:
        ch.send(msg)
def flush_cache():
    print("cache flushed", flush=True)
with ipcwire.listen("unix://{sock}", codec="json") as server, \\
        ipcwire.graceful_shutdown(server, flush_cache, {str(pid)!r}, exit_code=3):
    try:
        server.serve(handle)
    finally:
        print("finally blocks run", flush=True)
"""
    proc = start(code, sock)
    proc.send_signal(signal.SIGTERM)
    code_, out, err = ended(proc)
    assert (code_, sorted(out)) == (3, ["cache flushed", "finally blocks run"]), err
    assert not pid.exists()
