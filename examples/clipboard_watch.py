"""The desktop clipboard as a (toy) channel: copy, notice the change, last writer wins.

Run: python examples/clipboard_watch.py   (starts a virtual X server if there is no display)
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys

import ipcwire

xvfb = None
if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    exe = shutil.which("Xvfb")
    if exe is None or shutil.which("xclip") is None:
        print("no display, and no Xvfb/xclip to make one: nothing to show")
        sys.exit(0)
    r, w = os.pipe()
    xvfb = subprocess.Popen(
        [exe, "-displayfd", str(w), "-nolisten", "tcp"],
        pass_fds=(w,),
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    select.select([r], [], [], 10)  # Xvfb writes its display number when it is ready
    os.environ["DISPLAY"] = ":" + os.read(r, 16).decode().strip()
    print("started a virtual X server on", os.environ["DISPLAY"])

try:
    with (
        ipcwire.connect("clipboard:", poll_interval=0.05) as writer,
        ipcwire.connect("clipboard:", poll_interval=0.05) as reader,
    ):
        print("using", writer.peer.address if writer.peer else "?")
        writer.send("hello, clipboard")
        print("reader saw:", reader.recv(timeout=5))
        writer.send("one")
        writer.send("two")  # overwrites "one" before the reader looks
        print("reader saw:", reader.recv(timeout=5), "(only the last writer wins)")
finally:
    if xvfb is not None:
        xvfb.terminate()
        xvfb.wait(5)
