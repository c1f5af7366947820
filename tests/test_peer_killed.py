"""A client process killed with -9 between messages is a broken channel, not a clean end, on
every mechanism that declares ``tells_failure`` and runs here without a daemon (dbus has its
own test, tests/dbus/test_failure.py): the server's channel gives the message sent before,
then ChannelBroken, promptly. An orchestrator must never take a killed agent for one that
finished (docs/errors.md, "Finished, or failed?")."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from tests._proc import python, wait_line

import ipcwire
from ipcwire.registry import lookup

URLS: dict[str, Callable[[Path], str]] = {
    "unix": lambda d: f"unix://{d}/k.sock",
    "tcp": lambda d: "tcp://127.0.0.1:0",
    "ws": lambda d: "ws://127.0.0.1:0/k",
    "ws+unix": lambda d: f"ws+unix://{d}/k.ws",
    "grpc": lambda d: "grpc://127.0.0.1:0",
    "shm": lambda d: f"shm://ipcwire-killed-{os.getpid()}",
    "mq": lambda d: f"mq://ipcwire-killed-{os.getpid()}",
}


@pytest.mark.parametrize("scheme", list(URLS))
def test_a_killed_client_is_a_broken_channel(scheme: str, tmp_path: Path) -> None:
    assert lookup(scheme).capabilities.tells_failure
    with ipcwire.listen(URLS[scheme](tmp_path)) as lst:
        proc = python(
            f"""
            import ipcwire, threading
            ch = ipcwire.connect({str(lst.url)!r}, timeout=20)
            ch.send(b"before")
            print("sent", flush=True)
            threading.Event().wait()
            """
        )
        try:
            with lst.accept(timeout=20) as ch:
                assert wait_line(proc) == "sent"
                assert ch.recv(timeout=10) == b"before"
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                with pytest.raises(ipcwire.ChannelBroken):
                    ch.recv(timeout=10)
        finally:
            proc.kill()
            proc.communicate(timeout=10)


def test_every_mechanism_that_tells_failures_is_here_or_has_its_own_test() -> None:
    """A mechanism that starts declaring tells_failure must be added above (or, like dbus,
    which needs a bus, and http, whose request-only clients never hold a connection, to its
    own tests)."""
    told = {s.scheme for s in ipcwire.mechanisms() if s.capabilities.tells_failure}
    assert told == {"dbus", "http", *URLS}
