"""Rings between real processes: setup over the Unix socket, streams verified by sequence
number and checksum, C and Python ends talking to each other, hostile peers refused."""

from __future__ import annotations

import os
import random
import zlib

import pytest

from ipcwire.errors import EndOfChannel, HandshakeError, RemoteProtocolError

from ._util import IMPLS, PAIRS, peer
from .peer import HEAD, check_message, make_message


@pytest.mark.parametrize(("mine", "theirs"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_echo_between_processes_and_implementations(mine: str, theirs: str) -> None:
    with peer("server", "echo", impl=theirs) as p:
        link = p.link("client", impl=mine, capacity=(1 << 14, 1 << 14))
        rng = random.Random(3)
        for n in [0, 1, 100, 5000, 3 * (1 << 14) + 7, 64]:  # the long ones are split
            msg = rng.randbytes(n)
            link.tx.send(msg, timeout=10)
            assert link.rx.recv(timeout=10) == msg
        # fits in one ring: the echo server cannot block while this side is still sending
        batch = [rng.randbytes(rng.randrange(100)) for _ in range(100)]
        link.tx.send_many(batch, timeout=10)
        got: list[bytes] = []
        while len(got) < len(batch):
            got += link.rx.recv_many(timeout=10)
        assert got == batch
        buf = link.tx.loan(11, timeout=10)
        buf[:] = b"zero-copy!!"
        link.tx.commit()
        view = link.rx.view(timeout=10)
        assert bytes(view) == b"zero-copy!!"
        link.rx.release_view()
        link.close()
        p.finish()


def _stream(count: int, max_size: int, mine: str, theirs: str, policy: str) -> None:
    # this process sends, the peer verifies; then the peer sends and this process verifies
    with peer("server", "sink", count, impl=theirs, policy=policy) as p:
        link = p.link("client", impl=mine, policy=policy, capacity=(1 << 16, 1 << 16))
        rng = random.Random(11)
        for seq in range(count):
            link.tx.send(make_message(seq, rng, max_size), timeout=30)
        assert p.line().startswith(f"ok {count} ")
        link.close()
    with peer("client", "source", count, 5, max_size, impl=theirs, policy=policy) as p:
        link = p.link("server", impl=mine, policy=policy)
        for seq in range(count):
            check_message(link.rx.recv(timeout=30), seq)
        with pytest.raises(EndOfChannel):
            link.rx.recv(timeout=30)
        link.close()
        p.finish()


@pytest.mark.parametrize("policy", ["spin", "park", "hybrid"])
def test_stream_verified(policy: str) -> None:
    _stream(3000 if policy == "park" else 20000, 200_000, IMPLS[0], IMPLS[0], policy)


@pytest.mark.parametrize(("mine", "theirs"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_stream_verified_across_implementations(mine: str, theirs: str) -> None:
    _stream(2000, 100_000, mine, theirs, "hybrid")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("policy", ["spin", "hybrid"])
def test_soak_millions_of_messages(policy: str) -> None:
    _stream(2_000_000, 300_000, IMPLS[0], IMPLS[0], policy)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_across_implementations() -> None:
    if len(IMPLS) < 2:
        pytest.skip("the C extension is not built")
    _stream(200_000, 300_000, "c", "python", "hybrid")


def test_message_helpers_detect_damage() -> None:
    msg = bytearray(make_message(4, random.Random(0), 100))
    check_message(bytes(msg), 4)
    with pytest.raises(AssertionError, match="expected"):
        check_message(bytes(msg), 5)
    msg[-1:] = b"\x00" if msg[-1:] != b"\x00" else b"\x01"
    if len(msg) > HEAD.size:
        assert zlib.crc32(msg[HEAD.size :]) != HEAD.unpack_from(msg)[1]
        with pytest.raises(AssertionError, match="checksum"):
            check_message(bytes(msg), 4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("what", ["tail", "record", "kind"])
def test_peer_corrupting_the_ring_gives_remote_protocol_error(impl: str, what: str) -> None:
    with peer("server", "corrupt", what, impl=impl) as p:
        link = p.link("client", impl=impl)
        assert p.line() == "ready"
        p.tell()
        assert p.line() == "done"
        with pytest.raises(RemoteProtocolError, match="corrupt"):
            link.rx.recv(timeout=10)
        link.close()


@pytest.mark.parametrize(
    ("what", "why"),
    [
        ("unsealed", "not sealed"),
        ("size", "bytes, not the announced"),
        ("magic", "magic"),
        ("fds", "more file descriptors"),
        ("doorbell", "doorbell"),
        ("writesealed", "cannot be mapped for writing"),
    ],
)
def test_hostile_setup_is_refused_and_told(what: str, why: str) -> None:
    with peer("client", "hostile", what) as p:
        with pytest.raises(RemoteProtocolError, match=why):
            p.link("server")
        if what != "fds":
            assert p.line().startswith("answer")


def test_server_refusal_reaches_the_client() -> None:
    import socket
    import threading
    import time

    from ipcwire.shm._frames import recv_frame, send_frame
    from ipcwire.shm._setup import connect_link

    a, b = socket.socketpair()

    def refuse() -> None:
        _, fds = recv_frame(b, time.monotonic() + 5, 3)
        for fd in fds:
            import os

            os.close(fd)
        send_frame(b, {"shm": 1, "error": "no room"}, time.monotonic() + 5, [])

    t = threading.Thread(target=refuse)
    t.start()
    with pytest.raises(HandshakeError, match="no room"):
        connect_link(a, deadline=time.monotonic() + 5)
    t.join()
    a.close()
    b.close()


def test_a_setup_answer_that_is_not_utf8_is_a_protocol_error() -> None:
    import socket
    import threading
    import time

    from ipcwire.shm._frames import recv_frame
    from ipcwire.shm._setup import connect_link

    a, b = socket.socketpair()

    def answer() -> None:
        _, fds = recv_frame(b, time.monotonic() + 5, 3)
        for fd in fds:
            os.close(fd)
        body = b'{"shm": 1, "error": "\xb2"}'  # JSON, with a string that is not UTF-8
        b.sendall(len(body).to_bytes(4, "big") + body)

    t = threading.Thread(target=answer)
    t.start()
    with pytest.raises(RemoteProtocolError, match="not an ipcwire shm setup"):
        connect_link(a, deadline=time.monotonic() + 5)
    t.join()
    a.close()
    b.close()


def test_hybrid_does_not_spin_on_a_one_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """hybrid spins 50 µs before parking, except on a one-CPU machine (the spinning waiter
    would hold the CPU its peer needs); a spin_us given explicitly (0 included) is kept."""
    from ipcwire._core.url import parse_url
    from ipcwire.shm._naming import DEFAULT_SPIN_US, shm_options

    ep = parse_url("shm://spin-default")
    assert shm_options(ep, {}).spin_us == (DEFAULT_SPIN_US if (os.cpu_count() or 1) > 1 else 0)
    assert shm_options(ep, {"spin_us": 0}).spin_us == 0.0
    assert shm_options(parse_url("shm://x?spin_us=7"), {}).spin_us == 7.0
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # what a one-CPU VM reports
    assert shm_options(ep, {}).spin_us == 0.0
    assert shm_options(ep, {"spin_us": 20}).spin_us == 20.0  # asked for: kept
