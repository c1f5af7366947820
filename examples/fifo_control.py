"""A named pipe as a control channel: a shell command and a Python writer talk to a reader.

Run: python examples/fifo_control.py
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import ipcwire

workdir = tempfile.TemporaryDirectory()  # removed, with what is in it, at exit
path = os.path.join(workdir.name, "control.fifo")
url = f"fifo://{path}"

with ipcwire.listen(url, framing="ndjson") as fifo:  # creates the FIFO (0600); JSON lines
    print("fifo mode:", oct(os.stat(path).st_mode & 0o777))
    with fifo.accept() as commands:
        # Any program can write to it: here the shell.
        subprocess.run(["sh", "-c", f'echo \'{{"op": "reload"}}\' > {path}'], check=True)
        print("from the shell:", commands.recv(timeout=5))
        with ipcwire.connect(url, framing="ndjson") as writer:
            writer.send({"op": "stop", "big": "x" * 10_000})  # > PIPE_BUF: written under a lock
        got = commands.recv(timeout=5)
        print("from python:", got["op"], len(got["big"]), "bytes")
        print("after every writer left:", list(commands))  # EndOfChannel ends iteration
print("fifo removed on close:", not os.path.exists(path))
