"""The two worker processes of a benchmark run, and the parent's handle on them.

The parent starts two long-lived workers with the ``spawn`` start method (fresh interpreters,
nothing inherited but the shared objects contenders ask for), pins each to its own core, and
drives them over a control pipe. One measurement:

1. parent -> A ``("a", task)``: A builds the message pool, calls ``side_a`` (bind/listen),
   answers ``("ready", address)``, then accepts and runs its loop;
2. parent -> B ``("b", task, address)``: B builds the pool, calls ``side_b`` (connect) and runs;
3. each answers ``("done", result)`` or ``("error", summary, traceback)``;
4. parent -> both ``("finish",)``: they close their links (only now, so nothing in flight is
   cut off) and answer ``("closed",)``.

Workers stay up between measurements, so interpreters, imports and page faults are paid once,
and repetitions of different contenders interleave cheaply. When a measurement fails or times
out, both workers are killed and fresh ones started, so a broken contender cannot leave
anything behind for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from ipcwire.bench.loops import aecho, aping, asink, asource, echo, ping, sink, source
from ipcwire.bench.payload import Pool
from ipcwire.bench.stats import summarize_samples

__all__ = ["MeasurementFailed", "WorkerPair", "worker_main"]


class MeasurementFailed(Exception):
    """A measurement did not complete: a side raised (verification included) or timed out."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


# -- inside a worker ----------------------------------------------------------------------------
def worker_main(
    conn: Connection, cpu: int | None, shared: dict[str, Any], log_path: str | None = None
) -> None:
    """Entry point of a worker process. With ``log_path``, the worker's stderr (file
    descriptor 2, so C libraries' logging too) goes to that file: the libraries under test
    log chatter (gRPC's GOAWAY lines, asyncio's pending-task warnings at shutdown) that must
    not scroll through the progress display; the parent shows it when a measurement fails."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    if log_path is not None:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    from ipcwire.bench.machine import implementation

    conn.send(("hello", {"pid": os.getpid(), "cpus": cpus, "implementation": implementation()}))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "quit":
            return
        task = msg[1]
        address = msg[2] if msg[0] == "b" else None
        try:
            if task.contender.api == "asyncio":
                asyncio.run(_run_async(conn, task, address, shared.get(task.contender.id)))
            else:
                _run_blocking(conn, task, address, shared.get(task.contender.id))
        except BaseException as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def _report(conn: Connection, result: dict[str, Any]) -> None:
    samples = result.pop("samples_ns", None)
    if samples is not None:
        result["latency_ns"] = summarize_samples(samples) if samples else None
    idle = result.pop("idle_samples_ns", None)
    if idle:
        result["idle_latency_ns"] = summarize_samples(idle)
    conn.send(("done", result))


def _check_finish(msg: Any) -> None:
    if msg[0] != "finish":  # pragma: no cover - protocol error in the parent
        raise RuntimeError(f"unexpected control message {msg!r}")


def _finish(conn: Connection, result: dict[str, Any]) -> None:
    """Report, then wait for the parent's go-ahead to close (the peer may still be reading)."""
    _report(conn, result)
    _check_finish(conn.recv())


async def _afinish(conn: Connection, result: dict[str, Any]) -> None:
    """:func:`_finish` without blocking the event loop, which may still be flushing the last
    messages to the peer."""
    _report(conn, result)
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(conn.fileno(), ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    _check_finish(conn.recv())


_POOLS: dict[tuple[int, int], Pool] = {}


def _quiet_gc() -> None:
    """Collect what the previous measurement left, then freeze what survives (imports, pools):
    a collection during the measurement then scans only what this contender allocates, and
    this call stays cheap however many libraries the worker has imported."""
    gc.collect()
    gc.freeze()


def _pool(size: int, seed: int) -> Pool:
    """The pool for this size, built once per worker (at most 16 MiB each)."""
    pool = _POOLS.get((size, seed))
    if pool is None:
        pool = _POOLS[(size, seed)] = Pool(size, seed)
    return pool


def _blocking_loop(task: Any, side: str, link: Any, pool: Pool) -> dict[str, Any]:
    """The loop side A or B runs for this task."""
    c = task.contender
    if task.kind == "round_trip":
        if side == "a":
            return echo(link, pool)
        return ping(link, pool, task.warmup, task.duration, task.idle, task.gap)
    if (side == "a") == c.listener_sends:
        return source(link, pool, task.warmup, task.duration, task.batch)
    return sink(link, pool, task.batch > 0)


async def _async_loop(task: Any, side: str, link: Any, pool: Pool) -> dict[str, Any]:
    """:func:`_blocking_loop` for an asyncio contender."""
    c = task.contender
    if task.kind == "round_trip":
        if side == "a":
            return await aecho(link, pool)
        return await aping(link, pool, task.warmup, task.duration, task.idle, task.gap)
    if (side == "a") == c.listener_sends:
        return await asource(link, pool, task.warmup, task.duration, task.batch)
    return await asink(link, pool, task.batch > 0)


def _run_blocking(conn: Connection, task: Any, address: str | None, shared: Any) -> None:
    c = task.contender
    pool = _pool(task.size, task.seed)
    _quiet_gc()
    phases: dict[str, float] = {}
    t = time.perf_counter()
    if address is None:
        acceptor = c.side_a(task, shared)
        phases["open_s"] = time.perf_counter() - t
        try:
            conn.send(("ready", acceptor.address))
            t = time.perf_counter()
            link = acceptor.accept()
            phases["accept_s"] = time.perf_counter() - t
            try:
                _finish(conn, _blocking_loop(task, "a", link, pool))
            finally:
                t = time.perf_counter()
                link.close()
        finally:
            acceptor.close()
    else:
        link = c.side_b(task, address, shared)
        phases["open_s"] = time.perf_counter() - t
        try:
            _finish(conn, _blocking_loop(task, "b", link, pool))
        finally:
            t = time.perf_counter()
            link.close()
    phases["close_s"] = time.perf_counter() - t
    conn.send(("closed", phases))


async def _aclose(obj: Any) -> None:
    close = getattr(obj, "aclose", None) or obj.close
    result = close()
    if inspect.isawaitable(result):
        await result


async def _run_async(conn: Connection, task: Any, address: str | None, shared: Any) -> None:
    c = task.contender
    pool = _pool(task.size, task.seed)
    _quiet_gc()
    phases: dict[str, float] = {}
    t = time.perf_counter()
    if address is None:
        acceptor = await c.side_a(task, shared)
        phases["open_s"] = time.perf_counter() - t
        try:
            conn.send(("ready", acceptor.address))
            t = time.perf_counter()
            link = await acceptor.accept()
            phases["accept_s"] = time.perf_counter() - t
            try:
                await _afinish(conn, await _async_loop(task, "a", link, pool))
            finally:
                t = time.perf_counter()
                await _aclose(link)
        finally:
            await _aclose(acceptor)
    else:
        link = await c.side_b(task, address, shared)
        phases["open_s"] = time.perf_counter() - t
        try:
            await _afinish(conn, await _async_loop(task, "b", link, pool))
        finally:
            t = time.perf_counter()
            await _aclose(link)
    phases["close_s"] = time.perf_counter() - t
    conn.send(("closed", phases))


# -- in the parent ------------------------------------------------------------------------------
def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Hide the parent's ``__main__`` from ``spawn`` while the workers start.

    spawn would otherwise run the parent's main script again in each worker: a script without
    an ``if __name__ == "__main__"`` guard would start a benchmark in every worker, and
    ``python - <<EOF`` has no file to run. The workers never need it (contenders live in
    importable modules).
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {
        name: main.__dict__[name] for name in ("__file__", "__spec__") if name in vars(main)
    }
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class WorkerPair:
    """Two worker processes, A and B, each pinned to its CPU (None: not pinned)."""

    def __init__(
        self,
        cpus: tuple[int | None, int | None],
        shared: dict[str, Callable[[], Any]],
        log_dir: str | None = None,
    ) -> None:
        self.cpus = cpus
        self._factories = shared
        self._logs = (
            [os.path.join(log_dir, f"worker-{side}.log") for side in "ab"] if log_dir else []
        )
        self._log_marks = [0, 0]
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self.hello: list[dict[str, Any]] = []

    def start(self) -> None:
        """Start both workers and wait until they are pinned and listening."""
        ctx = multiprocessing.get_context("spawn")
        shared = {cid: make() for cid, make in self._factories.items()}
        with _main_hidden():
            self._spawn(ctx, shared)
        deadline = time.monotonic() + 60.0
        self.hello = [self._expect(conn, "hello", deadline)[1] for conn in self._conns]

    def _spawn(self, ctx: Any, shared: dict[str, Any]) -> None:
        for i, cpu in enumerate(self.cpus):
            parent_end, child_end = ctx.Pipe()
            log = self._logs[i] if self._logs else None
            proc = ctx.Process(
                target=worker_main,
                args=(child_end, cpu, shared, log),
                name="ipcwire-bench-worker",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self._procs.append(proc)
            self._conns.append(parent_end)

    def _expect(self, conn: Connection, what: str, deadline: float) -> tuple[Any, ...]:
        side = "A" if conn is self._conns[0] else "B"
        if not conn.poll(max(deadline - time.monotonic(), 0.0)):
            raise MeasurementFailed(f"worker {side} did not answer in time (waiting for {what})")
        try:
            msg: tuple[Any, ...] = conn.recv()
        except (EOFError, OSError) as exc:
            raise MeasurementFailed(f"worker {side} died (waiting for {what})") from exc
        if msg[0] == "error":
            raise MeasurementFailed(f"side {side}: {msg[1]}", msg[2])
        if msg[0] != what:
            raise MeasurementFailed(f"worker {side} answered {msg[0]!r}, expected {what!r}")
        return msg

    def measure(self, task: Any, timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run one measurement; return side A's and side B's results.

        Raises:
            MeasurementFailed: a side raised or the measurement took longer than ``timeout``.
                The workers are then in an unknown state: call :meth:`restart`.
        """
        self._log_marks = [_size(path) for path in self._logs] or [0, 0]
        try:
            return self._measure(task, timeout)
        except MeasurementFailed as exc:
            raise MeasurementFailed(str(exc), exc.detail + self._stderr_since_mark()) from exc

    def _stderr_since_mark(self, limit: int = 4000) -> str:
        """What the workers wrote to stderr since this measurement started (the last
        ``limit`` characters of each), for a failure's detail."""
        parts = []
        for side, path, mark in zip("AB", self._logs, self._log_marks, strict=False):
            try:
                with open(path, "rb") as f:
                    f.seek(mark)
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            if text.strip():
                parts.append(f"\nworker {side} stderr:\n{text[-limit:]}")
        return "".join(parts)

    def _measure(self, task: Any, timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
        a, b = self._conns
        deadline = time.monotonic() + timeout
        a.send(("a", task))
        address = self._expect(a, "ready", deadline)[1]
        b.send(("b", task, address))
        results: dict[str, dict[str, Any]] = {}
        pending = {a: "A", b: "B"}
        procs = dict(zip("AB", self._procs, strict=True))
        while pending:
            # Looked at twice a second: a worker's exit closes its pipe, unless a child it
            # forked still holds it; that was a 20 s timeout blamed on a lost message.
            ready = multiprocessing.connection.wait(
                list(pending), timeout=min(max(deadline - time.monotonic(), 0.0), 0.5)
            )
            if not ready:
                dead = [side for side in pending.values() if procs[side].exitcode is not None]
                if dead:
                    raise MeasurementFailed(
                        f"worker {dead[0]} died during the measurement{self._how_it_ended(dead[0])}"
                    )
                if time.monotonic() < deadline:
                    continue
                waiting = " and ".join(sorted(pending.values()))
                raise MeasurementFailed(
                    f"timed out after {timeout:.0f} s waiting for side {waiting} (a lost or "
                    f"truncated message leaves the receiver waiting forever)"
                )
            for conn in ready:
                assert isinstance(conn, Connection)
                side = pending.pop(conn)
                try:
                    msg = conn.recv()
                except (EOFError, OSError) as exc:
                    raise MeasurementFailed(
                        f"worker {side} died during the measurement{self._how_it_ended(side)}"
                    ) from exc
                if msg[0] == "error":
                    raise self._first_cause(side, msg, pending)
                results[side] = msg[1]
        a.send(("finish",))
        b.send(("finish",))
        close_deadline = time.monotonic() + 30.0
        results["A"]["phases"] = self._expect(a, "closed", close_deadline)[1]
        results["B"]["phases"] = self._expect(b, "closed", close_deadline)[1]
        return results["A"], results["B"]

    def _how_it_ended(self, side: str) -> str:
        """`` (exit status N)`` or `` (killed by SIGNAME)`` for a worker that died."""
        proc = self._procs["AB".index(side)]
        proc.join(timeout=2.0)  # its pipe is closed: it is exiting, if not gone already
        code = proc.exitcode
        if code is None:
            return ""
        if code < 0:
            try:
                return f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                return f" (killed by signal {-code})"
        return f" (exit status {code})"

    def _first_cause(
        self, side: str, msg: tuple[Any, ...], pending: dict[Connection, str]
    ) -> MeasurementFailed:
        """The error to report when ``side`` failed: when one side finds bad data it stops,
        and the other side then fails too (connection closed); report the finding, not the
        echo of it."""
        errors = [(side, msg)]
        for conn, other in pending.items():
            if conn.poll(2.0):
                try:
                    reply = conn.recv()
                except (EOFError, OSError):
                    reply = ("died",)
                if reply[0] == "error":
                    errors.append((other, reply))
            else:
                reply = ("died",) if self._procs["AB".index(other)].exitcode is not None else ()
            if reply and reply[0] == "died":
                # the other worker died (killed, crashed): this side's error is the echo of it
                return MeasurementFailed(
                    f"worker {other} died during the measurement{self._how_it_ended(other)}",
                    f"side {side} then failed:\n{msg[2]}",
                )
        errors.sort(key=lambda e: "VerificationError" not in e[1][1])
        first_side, first = errors[0]
        detail = "\n".join(f"side {s}:\n{m[2]}" for s, m in errors)
        return MeasurementFailed(f"side {first_side}: {first[1]}", detail)

    def stop(self) -> None:
        """Ask the workers to exit; kill those that do not."""
        for conn in self._conns:
            try:
                conn.send(("quit",))
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=5.0)
        self.kill()

    def kill(self) -> None:
        """Kill the workers at once (after a failure) and forget them."""
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
        for proc in self._procs:
            proc.join(timeout=5.0)
        for conn in self._conns:
            conn.close()
        self._procs = []
        self._conns = []

    def restart(self) -> None:
        """Kill and start fresh workers (and fresh shared objects)."""
        self.kill()
        self.start()
