"""A worker pool, as with multiprocessing.Queue, keeping several jobs in flight per worker.

The dispatcher listens on a Unix socket; each worker process connects and answers the jobs
it gets. serve() gives every worker a thread of the dispatcher, which keeps up to IN_FLIGHT
jobs sent to it before it waits for a result: one job at a time, each worker would wait a
round trip for every job (see docs/migrating.md for the numbers). A worker that dies has
its unanswered jobs put back in the queue, for the others.

Run: python examples/worker_pool.py
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import tempfile
import threading
import time

import ipcwire

N_WORKERS = 2
N_JOBS = 5000
IN_FLIGHT = 32  # well below what the socket holds each way (about 278 small messages)

jobs: queue.Queue[tuple[int, int]] = queue.Queue()
results: queue.Queue[tuple[int, int]] = queue.Queue()
finished = threading.Event()  # set once every result is in: the feeders then return


def worker(url: str) -> None:
    """One worker process: answer jobs until the dispatcher closes the channel."""
    with ipcwire.connect(url, codec="msgpack", reconnect=10) as ch:
        for job_id, x in ch:  # ends (EndOfChannel) when the dispatcher's feed() returns
            ch.send([job_id, x * x])


def feed(ch: ipcwire.Channel) -> None:
    """The dispatcher's thread for one worker (serve() runs one per connected worker)."""
    in_flight: dict[int, int] = {}
    try:
        while True:
            while len(in_flight) < IN_FLIGHT:  # top up the window
                try:
                    job_id, x = jobs.get(timeout=0 if in_flight else 0.05)
                except queue.Empty:
                    break
                ch.send([job_id, x])
                in_flight[job_id] = x
            if in_flight:
                job_id, result = ch.recv(timeout=30)  # a worker answers in order
                del in_flight[job_id]
                results.put((job_id, result))
            elif finished.is_set():
                return  # serve() closes the channel: the worker's loop ends
    except ipcwire.IpcwireError as exc:  # the worker died or hung: its jobs go to others
        print(f"worker lost ({type(exc).__name__}); {len(in_flight)} jobs re-queued")
        for job in in_flight.items():
            jobs.put(job)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"unix://{tmp}/pool.sock"
        for i in range(N_JOBS):
            jobs.put((i, i))
        with ipcwire.listen(url, codec="msgpack") as server:
            threading.Thread(target=server.serve, args=(feed,), daemon=True).start()
            ctx = mp.get_context("spawn")  # workers get only the URL: they open their channel
            procs = [ctx.Process(target=worker, args=(url,)) for _ in range(N_WORKERS)]
            start = time.perf_counter()
            for p in procs:
                p.start()
            got = dict(results.get(timeout=60) for _ in range(N_JOBS))
            elapsed = time.perf_counter() - start
            finished.set()
            # The listener stays open until the workers are done: one that starts late (a
            # spawned interpreter on a busy machine) still connects, finds no work and ends,
            # instead of finding no socket and failing after its reconnect window.
            for p in procs:
                p.join(30)
    assert got == {i: i * i for i in range(N_JOBS)}
    print(
        f"{N_JOBS} jobs on {N_WORKERS} workers, {IN_FLIGHT} in flight each: all correct, "
        f"{elapsed:.2f} s with the workers' start-up; exit codes {[p.exitcode for p in procs]}"
    )


if __name__ == "__main__":
    main()
