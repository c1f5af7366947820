"""A blocking receive with a timeout keeps it while another thread receives on the channel
(receives take turns): it raises Timeout, saying another thread was receiving, instead of
waiting for that thread's whole receive. Before, recv(timeout=0.5) behind a recv() without a
timeout waited until that one got a message (for ever, if none came): unix, tcp, pipes, then
mq, ws, ws+unix, udp, spool, http and http+unix clients, sse+http clients, then grpc
(blocking client and server channels).

The mechanisms whose receives do not take turns (each thread waits on its own: signal,
clipboard, dbus, an http server's channel) are checked too: the second receive keeps its
timeout there as well. shm's C ring keeps it (helper-136).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from tests._proc import wait_until

import ipcwire
from ipcwire import pipe
from ipcwire.errors import Timeout

TURNS = "another thread was receiving on this channel meanwhile (receives take turns)"
_n = itertools.count()

# (name, whether its receives take turns)
MECHANISMS = [
    ("unix", True),
    ("tcp", True),
    ("pipe", True),
    ("mq", True),
    ("ws", True),
    ("ws+unix", True),
    ("udp", True),
    ("spool", True),
    ("http", True),
    ("http+unix", True),
    ("sse+http", True),
    ("shm", True),
    ("grpc", True),
    ("grpc-server", True),
    ("http-server", False),
    ("http+unix-server", False),
    ("dbus", False),
    ("dbus-server", False),
    ("signal", False),
    ("clipboard", False),
]


def _listening(stack: ExitStack, url: str, *, server_receives: bool = False) -> tuple[Any, Any]:
    """(receiving end, sending end) of a channel through a listener at ``url``."""
    lst = stack.enter_context(ipcwire.listen(url))
    client = stack.enter_context(ipcwire.connect(lst.url, timeout=10))
    server = stack.enter_context(lst.accept(timeout=10))
    return (server, client) if server_receives else (client, server)


@pytest.fixture(params=[name for name, _ in MECHANISMS])
def receiver(
    request: pytest.FixtureRequest, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, Callable[[], None], bool]]:
    """(a channel, a function making one message arrive on it, whether receives take turns)."""
    name: str = request.param
    turns = dict(MECHANISMS)[name]
    ch: Any
    peer: Any
    with ExitStack() as stack:
        if name == "pipe":
            a, b = pipe.ends()
            ch, peer = stack.enter_context(a.open()), stack.enter_context(b.open())
        elif name == "udp":
            from ipcwire.udp import pair

            ch, peer = pair()
            stack.enter_context(ch)
            stack.enter_context(peer)
        elif name == "spool":
            url = f"spool://{sock_dir}/spool"
            ch = stack.enter_context(ipcwire.connect(url))
            peer = stack.enter_context(ipcwire.connect(url))
            stack.callback(shutil.rmtree, sock_dir / "spool")
        elif name == "signal":
            ch = stack.enter_context(ipcwire.listen("signal:USR1")).accept()
            yield ch, lambda: os.kill(os.getpid(), signal.SIGUSR1), turns
            return
        elif name == "clipboard":
            from tests.clipboard.conftest import _xvfb

            monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
            display, _ = stack.enter_context(_xvfb())
            ch = stack.enter_context(ipcwire.connect("clipboard:", display=display))
            peer = stack.enter_context(ipcwire.connect("clipboard:", display=display))
        elif name.startswith("dbus"):
            from tests.dbus.conftest import _daemon

            address, _ = stack.enter_context(_daemon())
            monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
            url = f"dbus://session/io.ipcwire.Turns{os.getpid()}.N{next(_n)}/io/ipcwire/Turns"
            ch, peer = _listening(stack, url, server_receives=name.endswith("server"))
        else:
            url = {
                "unix": f"unix://{sock_dir}/t.sock",
                "tcp": "tcp://127.0.0.1:0",
                "mq": f"mq:///iwturns{os.getpid()}-{next(_n)}",
                "ws": "ws://127.0.0.1:0/turns",
                "ws+unix": f"ws+unix://{sock_dir}/w.sock",
                "http": "http://127.0.0.1:0/turns",
                "http+unix": f"http+unix://{sock_dir}/h.sock",
                "sse+http": "sse+http://127.0.0.1:0/turns",
                "shm": f"shm://{sock_dir}/m.sock",
                "grpc": "grpc://127.0.0.1:0",
                "grpc-server": "grpc://127.0.0.1:0",
                "http-server": "http://127.0.0.1:0/turns",
                "http+unix-server": f"http+unix://{sock_dir}/h.sock",
            }[name]
            ch, peer = _listening(stack, url, server_receives=name.endswith("server"))
        yield ch, lambda: peer.send(b"x", timeout=10), turns


def _waiting(thread: threading.Thread, ch: Any) -> bool:
    """Whether ``thread`` is inside ``ch.recv()``, past its first line (in a call it made)."""
    frame = sys._current_frames().get(thread.ident or 0)
    depth = 0
    while frame is not None:
        if frame.f_code.co_name == "recv" and frame.f_locals.get("self") is ch:
            return depth > 0
        depth += 1
        frame = frame.f_back
    return False


def _holds_turn(ch: Any) -> bool:
    """Whether another thread holds the channel's receive turn: a receive that does not wait
    says so (one that would wait for the turn is taken as a yes: the test then fails)."""
    said: list[BaseException | None] = []

    def look() -> None:
        try:
            ch.recv(timeout=0)
            said.append(None)
        except BaseException as exc:
            said.append(exc)

    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(2)
    if not said:
        return True
    assert isinstance(said[0], Timeout), said[0]
    return TURNS in str(said[0])


def test_a_receive_behind_another_thread_keeps_its_timeout(
    receiver: tuple[Any, Callable[[], None], bool],
) -> None:
    ch, arrive, turns = receiver
    first: list[object] = []
    a = threading.Thread(target=lambda: first.append(ch.recv()), daemon=True)
    a.start()
    # A waits in its receive, without a timeout (holding the turn, where there is one)
    assert wait_until(lambda: _holds_turn(ch) if turns else _waiting(a, ch))
    calls: list[tuple[str, float, Callable[[], object]]] = [
        ("recv", 0.2, lambda: ch.recv(timeout=0.2)),
        ("recv", 0, lambda: ch.recv(timeout=0)),
        ("recv_many", 0.2, lambda: ch.recv_many(timeout=0.2)),
        ("recv_many", 0, lambda: ch.recv_many(timeout=0)),
    ]
    got: list[tuple[str, float, BaseException | None, float]] = []

    def receive_second() -> None:
        for what, timeout, call in calls:
            start = time.monotonic()
            try:
                call()
                exc = None
            except BaseException as e:
                exc = e
            got.append((what, timeout, exc, time.monotonic() - start))

    b = threading.Thread(target=receive_second, daemon=True)
    b.start()
    b.join(10)  # nothing is sent until B is done: before, B waited as long as A did
    assert not b.is_alive(), f"a receive waited for the first thread's receive: {got}"
    for what, timeout, exc, took in got:
        assert isinstance(exc, Timeout), (what, timeout, exc)
        assert took < timeout + 1.0, (what, timeout, took)
        assert exc.endpoint == ch.url, exc
        if turns:
            assert TURNS in str(exc), exc
            assert ("yet" if timeout == 0 else f"within {timeout} s") in str(exc), exc
    arrive()
    a.join(10)
    assert not a.is_alive()
    assert first in ([b"x"], ["x"], [signal.SIGUSR1]), first
