"""Unix socket: a server and a client in one script (run: python examples/unix_echo.py)."""

from __future__ import annotations

import os
import tempfile
import threading

import ipcwire

workdir = tempfile.TemporaryDirectory()  # removed, with what is in it, at exit
path = os.path.join(workdir.name, "app.sock")
url = f"unix://{path}"


def handle(ch: ipcwire.Channel) -> None:
    for msg in ch:  # until the client closes
        ch.send({"echo": msg, "from_pid": os.getpid()})


with ipcwire.listen(url, codec="json") as server:  # socket file is 0600, removed on close
    threading.Thread(target=server.serve, args=(handle,), daemon=True).start()

    with ipcwire.connect(url, codec="json") as ch:
        reply = ch.request({"op": "ping"}, timeout=2)
        print("reply:", reply)
        print(
            "server is pid", ch.peer.pid if ch.peer else "?", "uid", ch.peer.uid if ch.peer else "?"
        )
        ch.send_many([{"n": i} for i in range(3)])
        print("batch:", [ch.recv(timeout=2) for _ in range(3)])

print("socket file left behind:", os.path.exists(path))
