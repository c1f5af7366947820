"""A TCP proxy on loopback whose link can be cut silently, as a network partition cuts it:
after :meth:`Partition.part` nothing is forwarded either way and nothing is closed or reset
(each side's data waits in the kernel, unacknowledged by the other end), and new connections
are accepted but never reach the target. :meth:`Partition.heal` carries the data again,
nothing lost (as TCP retransmits across a partition that ends). For tests of what a channel
does when its network stops carrying data (tests/ws, tests/http, tests/grpc)."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class Partition:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.parted = threading.Event()
        self._flow = threading.Condition()
        self._closed = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def part(self) -> None:
        """Stop carrying data, both ways, without a word to either side."""
        self.parted.set()

    def heal(self) -> None:
        """Carry the data again (the connections made while parted stay cut off)."""
        with self._flow:
            self.parted.clear()
            self._flow.notify_all()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            if self.parted.is_set():
                continue  # accepted by the kernel, never forwarded
            upstream = socket.create_connection(self.target)
            self._keep(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                self._closed.wait()  # (no close passes: the other end is left as it is)
                return
            with self._flow:
                # parted: what was just read waits, and nothing more is read (the sender's
                # kernel keeps the rest, unacknowledged)
                self._flow.wait_for(lambda: not self.parted.is_set() or self._closed.is_set())
            if self._closed.is_set():
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        if self._closed.is_set():
            return
        with self._flow:
            self._closed.set()
            self._flow.notify_all()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # (close() alone does not wake accept)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> Partition:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
