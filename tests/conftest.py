"""Shared fixtures: fresh endpoint URLs in private temporary directories."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests._loops import LOOPS, AioRun, runner_for

# grpc as ipcwire loads it (ipcwire.grpc._grpcio): with its fork support off. Test modules
# that import grpc themselves are collected first and loaded it with grpcio's default (on);
# a subprocess started while an in-process gRPC listener or client had threads then could die
# in grpc's fork handler before its exec (CI: `ipcwire bench --load` killed by SIGABRT,
# "Epoll1Poller ... epoll_wait error: Bad file descriptor": the poller that handler restarts
# in the child, on a descriptor the child's close_fds had closed).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _no_stale_shm_sockets() -> Iterator[None]:
    """Remove, after the session, the shm rendezvous socket files its tests left stale: a
    listener killed with -9 (as many tests do, on purpose) leaves its file in the machine-wide
    shm directory, which the next listen() of the same name would replace; the tests' names
    are random, so nothing would, and they piled up by the hundred. Only files that appeared
    during the session, and that no socket is bound to, are removed."""
    from ipcwire._core.url import parse_url
    from ipcwire.doctor.machine import stale_sockets
    from ipcwire.shm._naming import socket_path

    directory = os.path.dirname(socket_path(parse_url("shm://probe")))
    before = set(os.listdir(directory)) if os.path.isdir(directory) else set()
    yield
    for path in stale_sockets([directory]) or []:
        if os.path.basename(path) not in before and os.path.dirname(path) == directory:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short private directory for socket files (paths must stay under 107 bytes)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="iw-", dir="/tmp"))
    try:
        yield d
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


@pytest.fixture
def unix_url(sock_dir: Path) -> Callable[[], str]:
    """A function returning a fresh unix:// URL on each call."""
    return lambda: f"unix://{sock_dir}/s{next(_counter)}.sock"


@pytest.fixture
def tcp_url() -> Callable[[], str]:
    """A function returning a loopback TCP URL on a free port (port 0)."""
    return lambda: "tcp://127.0.0.1:0"


@pytest.fixture
def abstract_url() -> Callable[[], str]:
    return lambda: f"unix:@ipcwire-test-{os.getpid()}-{next(_counter)}"


@pytest.fixture(params=["c", "python"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test on both paths of the blocking stream channels: the C ``FrameSender`` and
    ``FrameReceiver`` (a missing build fails here, even under IPCWIRE_STREAM_IMPL=python)
    and the pure-Python paths, as without the extension."""
    from ipcwire._stream import native

    if request.param == "python":
        monkeypatch.setattr(native, "FRAME_SENDER", None)
        monkeypatch.setattr(native, "FRAME_RECEIVER", None)
    else:
        from ipcwire._ext import _native

        monkeypatch.setattr(native, "FRAME_SENDER", _native.FrameSender)
        monkeypatch.setattr(native, "FRAME_RECEIVER", _native.FrameReceiver)
    yield request.param


@pytest.fixture(params=LOOPS)
def aio_run(request: pytest.FixtureRequest) -> AioRun:
    """``aio_run(coro)`` runs ``coro`` on a fresh event loop of each kind the asyncio API
    supports (tests/_loops.py)."""
    return runner_for(request.param)
