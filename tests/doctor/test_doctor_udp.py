"""``ipcwire doctor udp://``: a port held by another process (named), nothing bound (the
client's ECONNREFUSED), a server on another address, a socket connected to one peer, and a
reader too slow (the kernel's drop counter); each fix shown to work."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from tests._proc import child, kill9, wait_line
from tests.doctor._helpers import doctor, doctor_json, findings

import ipcwire
from ipcwire.doctor import check_udp, diagnose

# A process holding a UDP socket: bound to HOST (port 0: any), connected to PEER if given,
# with a receive buffer of RCVBUF bytes if given; it never reads.
HOLDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if {rcvbuf}:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, {rcvbuf})
s.bind(({host!r}, {port}))
if {peer!r}:
    s.connect({peer!r})
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def _holder(host: str = "127.0.0.1", port: int = 0, peer: object = None, rcvbuf: int = 0) -> str:
    return HOLDER.format(host=host, port=port, peer=peer, rcvbuf=rcvbuf)


def _unbound_port() -> int:
    """A UDP port nothing has bound, below the kernel's ephemeral range: a bind to port 0 or a
    send from an unbound socket never gets it, so no other process (the other pytest
    worker's) binds it while the test expects it free, as one freed from that range could."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(1024, low)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # some program's
        return port


def test_port_held_by_another_process_is_named_and_freeing_it_fixes_it() -> None:
    with child(_holder()) as proc:
        port = int(wait_line(proc))
        code, data = doctor_json(f"udp://127.0.0.1:{port}", "--listen")
        assert code == 1
        [busy] = findings(data, "udp.in_use")
        assert busy["data"]["pids"] == [proc.pid]
        assert f"pid {proc.pid}" in busy["summary"]
        assert f"kill {proc.pid}" in busy["fix"]
        # A sender, on the other hand, finds the port bound, by that process.
        [bound] = check_udp("127.0.0.1", port).find("udp.bound")
        assert bound.data["pids"] == [proc.pid]
        kill9(proc)  # the fix
    report = check_udp("127.0.0.1", port, listen=True)
    assert report.ok and report.find("udp.free")
    ipcwire.listen(f"udp://127.0.0.1:{port}").close()


def test_nothing_bound_is_what_a_connected_client_sees_as_refused() -> None:
    port = _unbound_port()
    out = doctor(f"udp://127.0.0.1:{port}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "nothing is bound to port" in out.stdout
    [refused] = check_udp("127.0.0.1", port).problems
    assert refused.check == "udp.refused"
    assert f"empty datagram to 127.0.0.1:{port} on a connected socket -> ECONNREFUSED" in (
        refused.evidence
    )
    with ipcwire.listen(f"udp://127.0.0.1:{port}"):  # the fix
        report = check_udp("127.0.0.1", port)
        assert report.ok and report.find("udp.bound")


def test_server_on_another_address_is_found_and_sending_there_works() -> None:
    with child(_holder(host="127.0.0.2")) as proc:
        port = int(wait_line(proc))
        code, data = doctor_json(f"udp://127.0.0.1:{port}")
        assert code == 1
        [other] = findings(data, "udp.other_address")
        assert other["data"]["listening_on"] == ["127.0.0.2"]
        assert other["data"]["pids"] == [proc.pid]
        assert "send to 127.0.0.2 instead" in other["fix"]
        report = check_udp("127.0.0.2", port)  # the fix
        assert report.ok and report.find("udp.bound")
        # ... and a server may take 127.0.0.1's port as well: the other address is named
        [free] = check_udp("127.0.0.1", port, listen=True).find("udp.free")
        assert "127.0.0.2" in free.summary


def test_a_socket_connected_to_one_peer_takes_nothing_from_others() -> None:
    peer = ("127.0.0.1", _unbound_port())
    with child(_holder(peer=peer)) as proc:
        port = int(wait_line(proc))
        [connected] = check_udp("127.0.0.1", port).problems
        assert connected.check == "udp.connected_elsewhere"
        assert connected.data["connected_to"] == [f"127.0.0.1:{peer[1]}"]
        assert connected.data["pids"] == [proc.pid]
        # what doctor says: a sender from elsewhere is refused
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("127.0.0.1", port))
            s.send(b"x")
            try:
                s.recv(1)
                raise AssertionError("not refused")
            except ConnectionRefusedError:
                pass


def test_a_reader_too_slow_shows_as_kernel_drops() -> None:
    with child(_holder(rcvbuf=1)) as proc:  # the smallest receive buffer, never read
        port = int(wait_line(proc))
        assert not check_udp("127.0.0.1", port).find("udp.drops")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(50):
                s.sendto(b"x" * 1000, ("127.0.0.1", port))
        report = check_udp("127.0.0.1", port)
        [drops] = report.find("udp.drops")
        assert drops.status == "warning"
        assert drops.data["pids"] == [proc.pid]
        assert drops.data["drops"] > 0
        assert "reader is too slow" in drops.summary
        assert report.ok  # a warning: the port works, it loses datagrams


def test_bad_urls_and_unknown_host() -> None:
    assert doctor("udp://127.0.0.1:0").returncode == 2
    assert doctor("udp://127.0.0.1").returncode == 2
    [bad] = diagnose("udp://no-such-host.invalid:9000").problems
    assert bad.check == "udp.resolve"
    [foreign] = check_udp("192.0.2.1", 9000, listen=True).problems  # TEST-NET-1: not ours
    assert foreign.check == "udp.not_local"


def test_privileged_port_for_an_unprivileged_server() -> None:
    low = next(p for p in range(900, 1000) if not check_udp("127.0.0.1", p).find("udp.bound"))
    code, data = doctor_json(f"udp://127.0.0.1:{low}", "--listen", as_nobody=True)
    assert code == 1
    [priv] = findings(data, "udp.privileged")
    assert "below 1024" in priv["summary"]
