"""mq:// between processes in different pid namespaces that share the IPC namespace and
/dev/shm (a client or a listener under ``unshare --pid --fork``): a pid one side reports is
its own namespace's, and means another process (or none) to the other side."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import posix_ipc
import pytest

import ipcwire
from ipcwire.errors import ChannelBroken
from ipcwire.mq._ends import end_pipe_path
from ipcwire.mq._rendezvous import lock_path

CLIENT = {
    "blocking": """
import os, sys, threading, ipcwire
ch = ipcwire.connect(sys.argv[1], timeout=10)
# /proc is the host's (no --mount-proc): /proc/self names this process's host pid
print(os.readlink("/proc/self"), os.getpid(), ch.peer.pid, flush=True)
ch.send(b"hi")
print(ch.recv(timeout=10).decode(), flush=True)
threading.Event().wait()
""",
    "asyncio": """
import asyncio, os, sys, ipcwire
async def main():
    ch = await ipcwire.aio.connect(sys.argv[1], timeout=10)
    print(os.readlink("/proc/self"), os.getpid(), ch.peer.pid, flush=True)
    await ch.send(b"hi")
    print((await ch.recv(timeout=10)).decode(), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
""",
}

LISTENER = """
import os, sys, threading, ipcwire
srv = ipcwire.listen(sys.argv[1])
print(os.readlink("/proc/self"), flush=True)
ch = srv.accept(timeout=10)
print(ch.peer.pid, flush=True)
ch.send(ch.recv(timeout=10) + b"-pong")
threading.Event().wait()
"""


@contextlib.contextmanager
def in_new_pid_namespace(code: str, url: str) -> Iterator[subprocess.Popen[str]]:
    """``code`` run as pid 1 of a new pid namespace (same IPC namespace and /dev/shm)."""
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", code, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()  # unshare; its namespace ends with its pid 1, killed by the test
        proc.communicate(timeout=10)


def line(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    got = proc.stdout.readline()
    if not got:
        proc.kill()
        raise AssertionError(proc.communicate(timeout=10)[1])
    return got.split()


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_client_in_another_pid_namespace(mq_url: Callable[..., str], api: str) -> None:
    """Before: the client took the listener for gone ('the listener exited during the
    handshake': its pid is not in the client's namespace), and the listener's peer.pid was
    1, the host's init, as the client is its namespace's pid 1."""
    url = mq_url()
    with (
        ipcwire.listen(url) as srv,
        in_new_pid_namespace(CLIENT[api], url) as proc,
        srv.accept(timeout=10) as ch,
    ):
        assert ch.peer is not None and ch.peer.pid is None  # not 1: another process
        assert ch.recv(timeout=10) == b"hi"
        ch.send(b"ho")
        host_pid, ns_pid, seen = line(proc)
        assert (ns_pid, seen) == ("1", "None")
        assert line(proc) == ["ho"]
        os.kill(int(host_pid), signal.SIGKILL)
        # its exit is seen at once, as through a pidfd in one namespace (not a Timeout)
        with pytest.raises(ChannelBroken, match="exited without closing it"):
            ch.recv(timeout=10)


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_listener_in_another_pid_namespace(mq_url: Callable[..., str], api: str) -> None:
    """Before: the listener took the client for gone ('client pid N exited before it was
    accepted', N not in its namespace) and dropped it; the client waited out its timeout
    and was told the listener was overloaded."""
    url = mq_url()
    name = url.removeprefix("mq://")
    try:
        with in_new_pid_namespace(LISTENER, url) as proc:
            (host_pid,) = line(proc)

            async def aio_exchange() -> None:
                async with await ipcwire.aio.connect(url, timeout=10) as ch:
                    assert ch.peer is not None and ch.peer.pid is None
                    await ch.send(b"ping")
                    assert await ch.recv(timeout=10) == b"ping-pong"
                    assert line(proc) == ["None"]
                    os.kill(int(host_pid), signal.SIGKILL)
                    with pytest.raises(ChannelBroken, match="exited without closing it"):
                        await ch.recv(timeout=10)

            if api == "asyncio":
                asyncio.run(aio_exchange())
                return
            with ipcwire.connect(url, timeout=10) as ch:
                assert ch.peer is not None and ch.peer.pid is None
                ch.send(b"ping")
                assert ch.recv(timeout=10) == b"ping-pong"
                assert line(proc) == ["None"]
                os.kill(int(host_pid), signal.SIGKILL)
                with pytest.raises(ChannelBroken, match="exited without closing it"):
                    ch.recv(timeout=10)
    finally:  # what the listener killed with -9 left
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_message_queue(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path(name))


MADE_PAIR = """
import os, sys
from ipcwire._core.url import parse_url
from ipcwire.mq._client import ClientSession
from ipcwire.options import ChannelOptions
url = sys.argv[1]
opts = ChannelOptions.build(parse_url(url), {})
s = ClientSession(url.removeprefix("mq://"), opts, maxmsg=2, msgsize=512, mode=0o600)
print(s.up.name, os.getpid(), flush=True)
sys.stdin.read()
"""


def _free_pid() -> int:
    """A pid no process has in this (the first) pid namespace."""
    with open("/proc/sys/kernel/pid_max") as f:
        top = int(f.read())
    for pid in range(top - 1, 300, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
    raise AssertionError("no free pid")


def test_a_pair_made_in_another_pid_namespace_is_not_taken_for_abandoned(
    mq_url: Callable[..., str],
) -> None:
    """A client in another pid namespace has made its pair and not announced it yet; its pid,
    in the pair's name, is no process here. Before: the next client here took the pair for
    that of a client killed before announcing it, and removed it under the live client."""
    url = mq_url()
    pid = _free_pid()
    # the namespace's next pid is set (ns_last_pid) so that the client gets `pid` there
    script = f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid; "$0" -c "$1" "$2"; :'
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script]
        + [sys.executable, MADE_PAIR, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    up = ""
    try:
        up, seen = line(proc)
        assert seen == str(pid)
        with ipcwire.listen(url) as srv, ipcwire.connect(url, timeout=10) as ch:
            ch.send(b"x")
            with srv.accept(timeout=10) as server:
                assert server.recv(timeout=10) == b"x"
        posix_ipc.MessageQueue(up).close()  # still there (ExistentialError before)
        assert os.path.exists(end_pipe_path(up))
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        for queue in (up, up.removesuffix(".up") + ".dn") if up else ():
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_message_queue(queue)
        if up:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(end_pipe_path(up))
