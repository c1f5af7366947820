"""kill -9 of either side: the other side learns at once (ChannelBroken, not a hang), and
nothing is left behind: no /dev/shm entry, no fd, no mapping, even after many connections."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ipcwire.errors import ChannelBroken, IpcwireError
from ipcwire.shm._link import Link
from ipcwire.shm._setup import connect_link

from ._util import IMPLS, PEER, Peer, dev_shm, memfd_maps, open_fds, peer

_Outcome = tuple[IpcwireError | None, float]
PROMPT = 2.0  # seconds: generous for a loaded 2-core machine; typically milliseconds


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    shm_before, fds_before = dev_shm(), open_fds()
    yield
    # Other tests may run at the same time and use /dev/shm (multiprocessing's semaphores,
    # POSIX queues): only a name of ours would be ours. The memfd never has a name there.
    new = {name for name in dev_shm() - shm_before if name.startswith("ipcwire-shm")}
    assert not new, f"something was left in /dev/shm: {new}"
    with open("/proc/self/maps") as f:
        assert "/dev/shm/" not in f.read()
    assert memfd_maps() == 0, "a shared-memory mapping outlived its channel"
    leaked = open_fds() - fds_before  # descriptors may also close: only new ones are leaks
    assert not leaked, f"file descriptors leaked: {sorted(leaked)}"


def _waiting_flag(link: Link, consumer: bool) -> bool:
    """Whether this side's parked flag is set in the header of the ring it reads/writes."""
    seg = link.segment
    assert seg is not None
    off = seg.offsets[1] if consumer else seg.offsets[0]  # this side is the client
    field = 384 if consumer else 388
    return bool(struct.unpack_from("=I", seg.mm, off + field)[0])


def _blocked_call(call: Callable[[], object]) -> tuple[threading.Thread, list[_Outcome]]:
    """Run ``call`` in a thread; the list gets (the error it raised, when)."""
    result: list[_Outcome] = []

    def run() -> None:
        try:
            call()
            result.append((None, time.monotonic()))
        except IpcwireError as exc:
            result.append((exc, time.monotonic()))

    t = threading.Thread(target=run)
    t.start()
    return t, result


def _until(cond: Callable[[], bool], what: str) -> None:
    """Poll an observable state (not a sleep standing in for synchronisation)."""
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.001)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("policy", ["spin", "park", "hybrid"])
@pytest.mark.parametrize("timeout", [30, None])
def test_kill_wakes_a_receiver_at_once(impl: str, policy: str, timeout: float | None) -> None:
    """A parked receiver sleeps in a blocking recv on the doorbell, which returns end of
    file (with a timeout too, when its deadline is more than 50 ms away: the C ring; the
    pure-Python ring's timed park polls the doorbell and the liveness socket)."""
    with peer("server", "idle", impl=impl, policy=policy) as p:
        link = p.link("client", impl=impl, policy=policy)
        assert p.line() == "ready"
        t, result = _blocked_call(lambda: link.rx.recv(timeout=timeout))
        if policy != "spin":  # wait until it is really parked
            _until(lambda: _waiting_flag(link, consumer=True), "the receiver park")
        killed = time.monotonic()
        p.kill()
        t.join(timeout=30)
        if t.is_alive():  # (never left hanging, even when this test fails)
            link.close()
            t.join()
        exc, when = result[0]
        assert isinstance(exc, ChannelBroken), exc
        assert "went away" in str(exc)
        assert when - killed < PROMPT
        link.close()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("policy", ["spin", "park", "hybrid"])
@pytest.mark.parametrize("timeout", [30, None])
def test_kill_wakes_a_sender_blocked_on_a_full_ring(
    impl: str, policy: str, timeout: float | None
) -> None:
    with peer("server", "idle", impl=impl, policy=policy) as p:
        link = p.link("client", impl=impl, policy=policy, capacity=(1 << 12, 1 << 12))
        assert p.line() == "ready"

        def flood() -> None:
            while True:
                link.tx.send(b"f" * 100, timeout=timeout)

        t, result = _blocked_call(flood)
        if policy != "spin":
            _until(lambda: _waiting_flag(link, consumer=False), "the sender park")
        killed = time.monotonic()
        p.kill()
        t.join(timeout=30)
        if t.is_alive():  # (never left hanging, even when this test fails)
            link.close()
            t.join()
        exc, when = result[0]
        assert isinstance(exc, ChannelBroken), exc
        assert when - killed < PROMPT
        link.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_send_to_a_dead_peer_fails_even_with_room(impl: str) -> None:
    with peer("server", "idle", impl=impl) as p:
        link = p.link("client", impl=impl, capacity=(1 << 16, 1 << 16))
        assert p.line() == "ready"
        p.kill()
        with pytest.raises(ChannelBroken):
            for _ in range(1000):  # 32 KB: the ring never fills
                link.tx.send(b"d" * 10, timeout=5)
        link.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_messages_published_before_death_are_delivered_then_broken(impl: str) -> None:
    with peer("server", "flood", impl=impl) as p:
        link = p.link("client", impl=impl, capacity=(1 << 16, 1 << 16))
        assert p.line() == "ready"
        assert link.rx.recv(timeout=10) == b"x" * 1000
        # the peer fills the ring and blocks; kill it with messages still in the ring
        _until(lambda: link.rx.buffered > 30_000, "the ring fill up")
        p.kill()
        got = 1
        with pytest.raises(ChannelBroken):
            while True:
                assert link.rx.recv(timeout=10) == b"x" * 1000
                got += 1
        assert got > 20
        link.close()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("policy", ["park", "spin"])
def test_kill_of_the_connecting_side(impl: str, policy: str) -> None:
    """Both ends in children; the client is killed, the server reports what it saw."""
    a, b = socket.socketpair()
    procs = []
    for role, sock, action in (("server", b, "hold"), ("client", a, "idle")):
        cmd = [sys.executable, str(PEER), role, str(sock.fileno()), impl, policy, action]
        procs.append(
            subprocess.Popen(
                cmd,
                pass_fds=[sock.fileno()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        sock.close()
    server, client = (Peer(proc, None) for proc in procs)
    try:
        assert server.line() == "ready"
        assert client.line() == "ready"
        client.kill()
        name, elapsed = server.line().split()
        assert name == "ChannelBroken"
        assert float(elapsed) < 10  # includes the time it waited before the kill
        server.finish()
    finally:
        for peer_ in (server, client):
            if peer_.proc.poll() is None:
                peer_.proc.kill()
            peer_.proc.communicate(timeout=10)


@pytest.mark.parametrize("impl", IMPLS)
def test_many_connections_leave_nothing(impl: str, tmp_path: Path) -> None:
    count = 150 if impl == "c" else 60
    path = str(tmp_path / "serve.sock")
    with peer("server", "serve", path, count, impl=impl) as p:
        assert p.line() == "ready"
        for i in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            link = connect_link(
                sock, deadline=time.monotonic() + 10, impl=impl, capacity=(1 << 12, 1 << 13)
            )
            link.tx.send(b"%d" % i)
            assert link.rx.recv(timeout=10) == b"%d" % i
            link.close()
        words = p.line().split()
        assert words[0] == "fds" and words[2] == "maps"
        assert int(words[3]) == 0, "the server kept mappings"
        assert int(words[1]) < 12, f"the server holds {words[1]} fds"
        p.finish()


def test_channels_dropped_without_close_leak_nothing(tmp_path: Path) -> None:
    import gc

    import ipcwire

    url = f"shm://{tmp_path}/drop.sock"
    with ipcwire.listen(url) as listener:
        for _ in range(20):
            client = ipcwire.connect(url, timeout=10, capacity="64K")
            server = listener.accept(timeout=10)
            client.send(b"x")
            assert server.recv(timeout=5) == b"x"
            del client, server
            gc.collect()
