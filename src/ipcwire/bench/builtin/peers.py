"""The peers people use today: multiprocessing, pyzmq, faster-fifo.

Each is used the way its documentation shows, with its defaults. multiprocessing and
faster-fifo objects can only be inherited, so the parent creates them (``make_shared``) and
hands them to both worker processes at spawn; each measurement leaves them empty.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any, Final

from ipcwire.bench.contender import Contender, Task

__all__ = ["PEERS"]

_QUEUE_MAXSIZE: Final = 1000  # bounded like pyzmq's default high-water mark


class _Ready:
    """An acceptor whose link already exists (pipes and queues need no connect)."""

    def __init__(self, link: Any, address: str = "") -> None:
        self._link = link
        self.address = address

    def accept(self) -> Any:
        return self._link

    def close(self) -> None:
        pass


class _Calls:
    """A link made of plain callables."""

    def __init__(self, send: Any, recv: Any, send_many: Any = None, recv_many: Any = None):
        self.send = send
        self.recv = recv
        if send_many is not None:
            self.send_many = send_many
        if recv_many is not None:
            self.recv_many = recv_many

    def close(self) -> None:
        pass


# -- multiprocessing.Pipe: a socketpair-backed Connection, send_bytes/recv_bytes --------------
def make_pipe() -> Any:
    return multiprocessing.get_context("spawn").Pipe(duplex=True)


def pipe_side_a(task: Task, shared: Any) -> _Ready:
    conn = shared[0]
    return _Ready(_Calls(conn.send_bytes, conn.recv_bytes))


def pipe_side_b(task: Task, address: str, shared: Any) -> _Calls:
    conn = shared[1]
    return _Calls(conn.send_bytes, conn.recv_bytes)


# -- multiprocessing.Queue: pickles each message in a feeder thread, over an os.pipe ----------
def make_queues() -> Any:
    ctx = multiprocessing.get_context("spawn")
    return ctx.Queue(_QUEUE_MAXSIZE), ctx.Queue(_QUEUE_MAXSIZE)


def queue_side_a(task: Task, shared: Any) -> _Ready:
    to_a, to_b = shared
    return _Ready(_Calls(to_b.put, to_a.get))


def queue_side_b(task: Task, address: str, shared: Any) -> _Calls:
    to_a, to_b = shared
    return _Calls(to_a.put, to_b.get)


# -- faster-fifo: a shared-memory circular buffer, put/get and put_many/get_many -------------
def make_fifos() -> Any:
    import faster_fifo

    size = 8 * 1024 * 1024
    return faster_fifo.Queue(max_size_bytes=size), faster_fifo.Queue(max_size_bytes=size)


def _fifo_link(out: Any, into: Any) -> _Calls:
    def get_many() -> Any:
        return into.get_many(timeout=30.0)

    def get() -> Any:
        return into.get(timeout=30.0)

    return _Calls(out.put, get, out.put_many, get_many)


def fifo_side_a(task: Task, shared: Any) -> _Ready:
    to_a, to_b = shared
    return _Ready(_fifo_link(to_b, to_a))


def fifo_side_b(task: Task, address: str, shared: Any) -> _Calls:
    to_a, to_b = shared
    return _fifo_link(to_a, to_b)


# -- pyzmq: REQ/REP for round trips, PUSH/PULL for throughput ---------------------------------
class _Zmq:
    """A pyzmq socket as a link. From pyzmq's own ``zmq.COPY_THRESHOLD`` (64 KiB; below it
    pyzmq copies even when told not to) sends and receives are zero-copy (``copy=False``),
    as pyzmq's documentation advises for large messages: with ``copy=True`` at 64 KiB the peer
    ran 1.5-1.7x slower than configured as its users would (helper-84's measurement)."""

    def __init__(self, ctx: Any, sock: Any, address: str = "", size: int = 0) -> None:
        import zmq

        self._ctx = ctx
        self._sock = sock
        self.address = address
        self.zero_copy = size >= zmq.COPY_THRESHOLD
        if self.zero_copy:
            send, recv = sock.send, sock.recv
            self.send = lambda message: send(message, copy=False)
            self.recv = lambda: recv(copy=False).buffer
        else:
            self.send = sock.send
            self.recv = sock.recv

    def accept(self) -> _Zmq:
        return self

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(linger=1000)
            self._ctx.term()


def zmq_side_a(task: Task, shared: Any) -> _Zmq:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP if task.kind == "round_trip" else zmq.PULL)
    if task.contender.options["transport"] == "ipc":
        address = f"ipc://{os.path.join(task.workdir, f'zmq{task.serial}')}"
        sock.bind(address)
    else:
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        address = f"tcp://127.0.0.1:{port}"
    return _Zmq(ctx, sock, address, task.size)


def zmq_side_b(task: Task, address: str, shared: Any) -> _Zmq:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ if task.kind == "round_trip" else zmq.PUSH)
    sock.connect(address)
    return _Zmq(ctx, sock, size=task.size)


_ZMQ_FRAMING: Final = "ZMTP: 2-byte header up to 255 B, 9 bytes above"
_ZMQ_NOTE: Final = (
    "an I/O thread per context does the socket work (and batches writes); "
    "it shares the pinned core with the caller; zero-copy (copy=False) from 64 KiB "
    "(zmq.COPY_THRESHOLD), as pyzmq advises for large messages"
)

PEERS: Final[tuple[Contender, ...]] = (
    Contender(
        id="peer/mp-pipe",
        title="multiprocessing.Pipe",
        group="peer",
        mechanism="unix",
        api="blocking",
        side_a=pipe_side_a,
        side_b=pipe_side_b,
        make_shared=make_pipe,
        baseline="raw/unix",
        framing="4-byte length prefix (Connection.send_bytes)",
        note="Connection.send_bytes/recv_bytes over a socketpair",
    ),
    Contender(
        id="peer/mp-queue",
        title="multiprocessing.Queue",
        group="peer",
        mechanism="pipe",
        api="blocking",
        side_a=queue_side_a,
        side_b=queue_side_b,
        make_shared=make_queues,
        baseline="raw/pipe",
        framing="pickle + 4-byte length prefix",
        overhead=None,
        note=f"put/get; maxsize={_QUEUE_MAXSIZE}; a feeder thread pickles and writes to an os.pipe",
    ),
    Contender(
        id="peer/faster-fifo",
        title="faster-fifo",
        group="peer",
        mechanism="shm",
        api="blocking",
        side_a=fifo_side_a,
        side_b=fifo_side_b,
        make_shared=make_fifos,
        requires=("faster_fifo",),
        baseline="raw/unix",
        framing="pickle + size header in a shared-memory ring",
        overhead=None,
        kinds=("round_trip", "throughput"),
        note="put/get with a process-shared mutex and condition variable; 8 MiB ring",
    ),
    Contender(
        id="peer/faster-fifo/batched",
        title="faster-fifo, batched",
        group="peer",
        mechanism="shm",
        api="blocking",
        side_a=fifo_side_a,
        side_b=fifo_side_b,
        make_shared=make_fifos,
        requires=("faster_fifo",),
        baseline="raw/unix",
        framing="pickle + size header in a shared-memory ring",
        overhead=None,
        kinds=("throughput",),
        batched=True,
        note="put_many/get_many",
    ),
    Contender(
        id="peer/zmq-ipc",
        title="pyzmq ipc",
        group="peer",
        mechanism="unix",
        api="blocking",
        side_a=zmq_side_a,
        side_b=zmq_side_b,
        requires=("zmq",),
        baseline="raw/unix",
        framing=_ZMQ_FRAMING,
        overhead=None,
        patterns={"round_trip": "REQ/REP", "throughput": "PUSH/PULL"},
        options={"transport": "ipc"},
        note=_ZMQ_NOTE,
    ),
    Contender(
        id="peer/zmq-tcp",
        title="pyzmq tcp",
        group="peer",
        mechanism="tcp",
        api="blocking",
        side_a=zmq_side_a,
        side_b=zmq_side_b,
        requires=("zmq",),
        baseline="raw/tcp",
        framing=_ZMQ_FRAMING,
        overhead=None,
        patterns={"round_trip": "REQ/REP", "throughput": "PUSH/PULL"},
        options={"transport": "tcp"},
        note=_ZMQ_NOTE,
    ),
)
