"""JSON lines: a client in any language (here a raw socket) talks to an ipcwire server."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading

import ipcwire

workdir = tempfile.TemporaryDirectory()  # removed, with what is in it, at exit
path = os.path.join(workdir.name, "agents.sock")

with ipcwire.listen(f"unix://{path}", framing="ndjson") as server:
    threading.Thread(
        target=server.serve,
        args=(lambda ch: [ch.send({"ack": m["id"]}) for m in ch],),
        daemon=True,
    ).start()

    # What a Node.js agent does: JSON.stringify(msg) + "\n" on a Unix socket.
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(path)
        raw.sendall(b"".join(json.dumps({"id": i}).encode() + b"\n" for i in range(3)))
        lines = raw.makefile()
        for _ in range(3):
            print("reply line:", lines.readline().strip())
