"""A worker that receives in a ``with ch, graceful_shutdown(ch):`` block exits with its
``exit_code`` on SIGTERM, and its peer sees a clean end.

The shutdown's close() of the channel wakes the worker's recv() with ChannelClosed, which can
reach ``graceful_shutdown``'s ``__exit__`` before the SystemExit the watcher thread sends (which
then does not come, the owner being on its way out): the ChannelClosed escaped, and the worker
exited 1 with a traceback (3 of 10 runs in a walkthrough). Here the worker's shutdown waits
(a registered callback, which runs after the channel's close) until the main thread has the
ChannelClosed in hand: that order, every time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import ipcwire
from ipcwire.errors import EndOfChannel

from .test_signals import ENV, ready

WORKER = """
import os, select, sys, ipcwire
from ipcwire.errors import ChannelClosed
ch = ipcwire.connect(sys.argv[1], timeout=10)
r, w = os.pipe()

def after_close():  # registered first, so it runs after ch.close()
    select.select([r], [], [], 10)  # until the main thread has its ChannelClosed

with ch, ipcwire.graceful_shutdown(after_close, ch):
    print("ready", flush=True)
    try:
        for job in ch:
            pass
    except ChannelClosed:
        os.write(w, b"x")
        raise
print("after the block", flush=True)
"""


def test_sigterm_while_receiving_exits_with_the_exit_code(tmp_path: Path) -> None:
    with ipcwire.listen(f"unix://{tmp_path}/w.sock") as lst:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WORKER), lst.url],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            peer = lst.accept(timeout=10)
            assert ready(proc) == "ready"
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        assert "after the block" not in out  # SystemExit: the code after it does not run
        try:
            peer.recv(timeout=10)
            raise AssertionError("a message came")
        except EndOfChannel:
            pass  # a clean end, not ChannelBroken
        peer.close()
