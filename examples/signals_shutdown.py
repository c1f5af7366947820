"""graceful_shutdown and terminate: a service stopped with SIGTERM cleans up and exits 0.

Run: python examples/signals_shutdown.py   (the service is this same file with --serve)
"""

from __future__ import annotations

import os
import sys
import tempfile

import ipcwire


def flush() -> None:
    print("cleanup: flushed", file=sys.stderr)


def serve(sock_path: str) -> None:
    server = ipcwire.listen(f"unix://{sock_path}", codec="json")
    # On SIGTERM/SIGINT: server.close() then flush() run once (reverse order), the socket
    # file is removed, serve() returns, and the process exits with status 0.
    with ipcwire.graceful_shutdown(flush, server):
        print("ready", flush=True)  # the parent waits for this line
        server.serve(lambda ch: None)


def main() -> None:
    workdir = tempfile.TemporaryDirectory()  # removed, with what is in it, at exit
    sock_path = os.path.join(workdir.name, "svc.sock")
    lines: list[str] = []
    svc = ipcwire.spawn(
        [sys.executable, __file__, "--serve", sock_path],
        codec="bytes",
        stderr=lines.append,
    )
    print("service says:", svc.recv(timeout=20))
    print("socket exists:", os.path.exists(sock_path))
    status = ipcwire.terminate(svc, timeout=5)  # SIGTERM; SIGKILL after 5 s if needed
    print("exit status:", status, "| socket left behind:", os.path.exists(sock_path))
    print("service stderr:", lines)


if __name__ == "__main__":
    serve(sys.argv[2]) if "--serve" in sys.argv else main()
