"""Two users of one group on one listener, as the docs say: listen(mode=0o660) and
connect(mode=0o660)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests._proc import NOBODY, python, wait_line

from ipcwire.errors import ConnectionRefused
from ipcwire.mq.blocking import MessageQueue


def _as(uid: int) -> str:
    return (
        "import os, ipcwire, ipcwire.mq.blocking, posix_ipc\n"
        "ipcwire.mechanisms()\n"
        f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({uid})\n"
    )


def test_a_group_member_connects_to_another_members_listener(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url()
    server = python(
        _as(NOBODY)
        + f"""
with ipcwire.listen({url!r}, mode=0o660) as listener:
    print("ready", flush=True)
    try:
        with listener.accept(timeout=20) as ch:
            ch.send(ch.recv(timeout=20) + b" pong")
            print("served", flush=True)
    except Exception as exc:
        print("SERVER", type(exc).__name__, exc, flush=True)
"""
    )
    try:
        assert wait_line(server) == "ready"
        client = python(
            _as(NOBODY - 1)
            + f"""
with ipcwire.connect({url!r}, mode=0o660, timeout=20) as ch:
    ch.send(b"ping")
    print(ch.recv(timeout=20).decode(), ch._in.name, ch._out.name, flush=True)
"""
        )
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
        assert out.startswith("ping pong "), out
        assert wait_line(server) == "served"
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()
    for name in out.split()[2:]:  # the client's pair is gone too
        with pytest.raises(ConnectionRefused):
            MessageQueue.open(name)


def test_a_client_whose_queues_the_listener_may_not_open_is_told_why(
    mq_url: Callable[..., str],
) -> None:
    """A group member connecting with the default mode (0o600): the listener cannot open its
    queues. The client got "its backlog of 10 clients waiting for accept() is full" and the
    server logged "client pid N is gone (permission denied ...)" about a live client
    (helper-92); now both say what happened and the fix."""
    url = mq_url()
    server = python(
        _as(NOBODY)
        + f"""
import logging
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
with ipcwire.listen({url!r}, mode=0o660) as listener:
    print("ready", flush=True)
    import sys; sys.stdin.readline()
"""
    )
    try:
        assert wait_line(server) == "ready"
        client = python(
            _as(NOBODY - 1)
            + f"""
try:
    ipcwire.connect({url!r}, timeout=2)
except ipcwire.Timeout as exc:
    print(exc)
"""
        )
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
        assert f"it runs as uid {NOBODY} and this client's queues are mode 0o600" in out, out
        assert "mode=0o660" in out and "backlog" not in out, out
    finally:
        _, log = server.communicate("stop\n", timeout=30)
    assert "cannot open the queues of client pid" in log and "is gone" not in log, log
