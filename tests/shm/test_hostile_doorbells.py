"""A hostile client that hands the server doorbells which are not what the setup says must not
keep a waiting server from seeing it die (nor make it hang in any other way).

The client here is a real process with real sockets: it connects to a listening Unix socket of
the test, sends the shared-memory hello by hand with other fds where its doorbell ends belong,
prints the server's answer, and exits when told (so its end of every socket closes):

* ``pair``: both ends of one socketpair, as the data and the space doorbell;
* ``crossed``: two connections, each given one end of the same socketpair as its data doorbell;
* ``own``: a copy of its end of its own connection socket, the liveness signal itself.

It keeps a copy of each end it hands over and, after each answer, clears their receive timeout
(SO_RCVTIMEO is the socket's, so this clears the server's too): a timeout the server sets on a
doorbell is not enough to keep it from waiting for ever.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ipcwire.errors import ChannelBroken, RemoteProtocolError
from ipcwire.shm import _layout as L
from ipcwire.shm._link import Link
from ipcwire.shm._peers import inode, peer_inode
from ipcwire.shm._setup import accept_link

from ._util import IMPLS

HOSTILE = textwrap.dedent(
    """
    import os, socket, struct, sys, time
    from ipcwire.shm._frames import recv_frame
    from ipcwire.shm._setup import ClientSetup

    path, mode = sys.argv[1], sys.argv[2]
    x, y = socket.socketpair()
    spare = [x.detach(), y.detach()]
    copies = [os.dup(fd) for fd in spare]
    keep = []
    for i in range(2 if mode == "crossed" else 1):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        setup = ClientSetup((4096, 4096), name="hostile")
        keep += [sock, setup]
        bells = setup._theirs
        if mode == "pair":
            for fd in bells:
                os.close(fd)
            bells[:] = spare
        elif mode == "crossed":
            os.close(bells[0])
            bells[0] = spare[i]
        elif mode == "own":
            os.close(bells[0])
            bells[0] = os.dup(sock.fileno())
        data, fds = setup.hello()
        socket.send_fds(sock, [data], fds)
        setup.sent()
        print(recv_frame(sock, time.monotonic() + 10, 0)[0].decode(), flush=True)
        for fd in copies:
            socket.socket(fileno=fd).detach()
            s = socket.socket(fileno=os.dup(fd))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 0))
            keep.append(s)
    sys.stdin.readline()
    os._exit(0)  # dies without closing anything: the kernel closes its fds
    """
)


@contextmanager
def hostile(path: Path, mode: str) -> Iterator[tuple[subprocess.Popen[str], socket.socket]]:
    """A listening socket at ``path`` and the hostile client connecting to it."""
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(path))
    lsock.listen()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOSTILE, str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, lsock
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        lsock.close()


def _accept(lsock: socket.socket, impl: str, policy: str) -> Link:
    lsock.settimeout(10)
    conn, _ = lsock.accept()
    conn.settimeout(None)
    return accept_link(
        conn, deadline=time.monotonic() + 10, name="shm://test", impl=impl, policy=policy
    )


def _try_accept(lsock: socket.socket, impl: str, policy: str) -> Link | RemoteProtocolError:
    try:
        return _accept(lsock, impl, policy)
    except RemoteProtocolError as exc:
        return exc


def _parked(link: Link) -> bool:
    """The receiving ring's waiting flag is up (its consumer is in its wait)."""
    assert link.segment is not None
    header = memoryview(link.segment.mm)[: L.HEADER_SIZE].cast("I")
    try:
        return bool(header[L.CONSUMER_WAITING])
    finally:
        header.release()


def _kernel_names_peers() -> bool:
    """The kernel says which socket a Unix socket is connected to (sock_diag) here."""
    a, b = socket.socketpair()
    with a, b:
        return peer_inode(a.fileno()) == inode(b.fileno())


@pytest.mark.parametrize("timeout", [None, 30.0])  # (30: a timed park sleeps in recv too)
@pytest.mark.parametrize("policy", ["park", "hybrid", "spin"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["pair", "crossed"])
def test_a_client_with_odd_doorbells_is_refused_or_seen_to_die(
    sock_dir: Path, mode: str, impl: str, policy: str, timeout: float | None
) -> None:
    with hostile(sock_dir / "h.sock", mode) as (proc, lsock):
        tries = [_try_accept(lsock, impl, policy) for _ in range(2 if mode == "crossed" else 1)]
        assert proc.stdout is not None and proc.stdin is not None
        answers = [proc.stdout.readline().strip() for _ in tries]
        links = [t for t in tries if isinstance(t, Link)]
        if _kernel_names_peers():
            # refused at the setup: the one of "pair", the second of "crossed"
            assert isinstance(tries[-1], RemoteProtocolError)
            assert "other end this server holds" in str(tries[-1])
            assert "client of shm://test" in str(tries[-1])
            assert "holds itself" in answers[-1]
        got: list[BaseException | bytes] = []

        def receive(link: Link) -> None:
            try:
                got.append(link.rx.recv(timeout))
            except BaseException as exc:
                got.append(exc)

        threads = [threading.Thread(target=receive, args=(ln,), daemon=True) for ln in links]
        for t in threads:
            t.start()
        # park, hybrid: let each receive get into its wait first (a bounded poll: nothing
        # but the ring's waiting flag says so); spin raises no flag, it asks the socket
        until = time.monotonic() + 10
        while (
            policy != "spin"
            and any(t.is_alive() and not _parked(ln) for t, ln in zip(threads, links, strict=True))
            and time.monotonic() < until
        ):
            time.sleep(0.001)
        proc.stdin.write("die\n")
        proc.stdin.flush()
        proc.wait(timeout=10)
        for t in threads:
            t.join(10)
        try:
            assert not any(t.is_alive() for t in threads), (
                "a receive still waits after the client died"
            )
            assert len(got) == len(links)
            assert all(isinstance(g, ChannelBroken) for g in got), got
        finally:
            for ln in links:
                ln.close()  # (also ends a receive that still waits, before the fix)
            for t in threads:
                t.join(10)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_client_handing_over_its_own_connection_is_refused(sock_dir: Path, impl: str) -> None:
    with hostile(sock_dir / "h.sock", "own") as (proc, lsock):
        with pytest.raises(RemoteProtocolError, match="where a doorbell") as err:
            link = _accept(lsock, impl, "spin")
            link.close()  # (before the fix: it was taken)
        assert "client of shm://test" in str(err.value)
        assert proc.stdout is not None
        answer = proc.stdout.readline()
        assert '"error"' in answer and "listening socket" in answer
