"""mq:// across IPC namespaces cannot work (POSIX queues belong to the IPC namespace); a
client outside the listener's is told so, not only "nothing is listening": the listener's lock
file in /dev/shm (which crosses IPC namespaces) is held by it, though no queue is visible."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

import ipcwire
from ipcwire.errors import ConnectionRefused

LISTENER = """
import sys, ipcwire
lst = ipcwire.listen(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_listener_in_another_ipc_namespace_is_named_as_such() -> None:
    url = f"mq://ipcwns-{uuid.uuid4().hex[:10]}"
    proc = subprocess.Popen(
        ["unshare", "--ipc", sys.executable, "-c", LISTENER, url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.communicate()[1]
        with pytest.raises(ConnectionRefused, match="another IPC namespace") as err:
            ipcwire.connect(url, timeout=5)
        assert "unix://" in str(err.value)
    finally:
        proc.communicate("", timeout=30)  # (its end of stdin: it closes, lock file and all)
    with pytest.raises(ConnectionRefused) as gone:  # and with nobody there, the usual words
        ipcwire.connect(url, timeout=5)
    assert "another IPC namespace" not in str(gone.value)
