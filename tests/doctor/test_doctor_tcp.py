"""``ipcwire doctor tcp://``: a port held by another process, nothing listening, a server on
another address; each named, and the fix shown to work."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

from tests._proc import child, kill9, wait_line, wait_until
from tests.doctor._helpers import doctor, doctor_json, findings

import ipcwire
from ipcwire.doctor import check_tcp

HOLDER = """
import socket, sys
s = socket.socket()
s.bind(({host!r}, 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_port_held_by_another_process_is_named_and_freeing_it_fixes_it() -> None:
    with child(HOLDER.format(host="127.0.0.1")) as proc:
        port = int(wait_line(proc))
        code, data = doctor_json(f"tcp://127.0.0.1:{port}", "--listen")
        assert code == 1
        [busy] = findings(data, "tcp.in_use")
        assert proc.pid in busy["data"]["pids"]
        assert f"pid {proc.pid}" in busy["summary"]
        assert f"kill {proc.pid}" in busy["fix"]
        # A client, on the other hand, finds a live server there.
        [live] = check_tcp("127.0.0.1", port).find("tcp.live")
        assert proc.pid in live.data["pids"]
        kill9(proc)  # the fix
    report = check_tcp("127.0.0.1", port, listen=True)
    assert report.ok and report.find("tcp.free")
    ipcwire.listen(f"tcp://127.0.0.1:{port}").close()


def test_nothing_listening_is_refused() -> None:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    [refused] = check_tcp("127.0.0.1", port).problems
    assert refused.check == "tcp.refused"
    assert "nothing listens on port" in refused.summary
    assert f"connect(127.0.0.1:{port}) -> ECONNREFUSED" in refused.evidence


def test_server_on_another_address_is_found_and_dialing_it_works() -> None:
    with child(HOLDER.format(host="127.0.0.2")) as proc:
        port = int(wait_line(proc))
        code, data = doctor_json(f"tcp://127.0.0.1:{port}")
        assert code == 1
        [other] = findings(data, "tcp.other_address")
        assert other["data"]["listening_on"] == ["127.0.0.2"]
        assert proc.pid in other["data"]["pids"]
        assert "connect to 127.0.0.2 instead" in other["fix"]
        report = check_tcp("127.0.0.2", port)  # the fix
        assert report.ok and report.find("tcp.live")


def test_unknown_host_and_foreign_address() -> None:
    [bad] = check_tcp("no-such-host.invalid", 80).problems
    assert bad.check == "tcp.resolve"
    [foreign] = check_tcp("192.0.2.1", 7000, listen=True).problems  # TEST-NET-1: not ours
    assert foreign.check == "tcp.not_local"


def test_privileged_port_for_an_unprivileged_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        low = next(p for p in range(900, 1000) if not check_tcp("127.0.0.1", p).find("tcp.live"))
    code, data = doctor_json(f"tcp://127.0.0.1:{low}", "--listen", as_nobody=True)
    assert code == 1
    [priv] = findings(data, "tcp.privileged")
    assert "below 1024" in priv["summary"]


def test_port_zero_is_explained_not_called_missing() -> None:
    # "tcp://127.0.0.1:0 has no port" was wrong: it has one, and 0 means "any free port".
    out = doctor("tcp://127.0.0.1:0", "--listen")
    assert out.returncode == 2
    assert "port 0 asks the kernel for any free port" in out.stdout
    assert "has no port" not in out.stdout


ACCEPTOR = """
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0)
print(s.getsockname()[1], flush=True)
held = []
while True:
    held.append(s.accept()[0])
"""


def test_a_stopped_listener_with_a_full_backlog_is_named_not_blamed_on_a_firewall() -> None:
    # Doctor said "no answer within 2 s: a firewall drops the packets, or the host is down"
    # of a listener on this machine whose accept queue was full (the kernel drops the SYN).
    with child(ACCEPTOR) as proc:
        port = int(wait_line(proc))
        os.kill(proc.pid, signal.SIGSTOP)
        clients = []
        try:
            for _ in range(8):  # fill the accept queue: until a connect gets no answer
                c = socket.socket()
                c.settimeout(1)
                clients.append(c)
                try:
                    c.connect(("127.0.0.1", port))
                except TimeoutError:
                    break
            else:
                raise AssertionError("the accept queue never filled")
            code, data = doctor_json(f"tcp://127.0.0.1:{port}")
            assert code == 0  # a warning, as unix.backlog_full
            assert not findings(data, "tcp.no_answer")
            [full] = findings(data, "tcp.backlog_full")
            assert full["data"]["pids"] == [proc.pid]
            assert f"pid {proc.pid} is stopped" in " ".join(full["evidence"])
            assert full["fix"] == f"resume it: kill -CONT {proc.pid}"
            subprocess.run(full["fix"].removeprefix("resume it: "), shell=True, check=True)
            assert wait_until(lambda: check_tcp("127.0.0.1", port).find("tcp.live"))
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            for c in clients:
                c.close()


def test_the_wildcard_finds_the_listener_on_loopback_by_pid() -> None:
    # A listener on 127.0.0.1: a client's connect to 0.0.0.0 reaches it (Linux), and a
    # server's bind to 0.0.0.0 collides with it; doctor said "a server" and "another
    # process" where it knew the pid.
    with child(HOLDER.format(host="127.0.0.1")) as proc:
        port = int(wait_line(proc))
        [live] = check_tcp("0.0.0.0", port).find("tcp.live")
        assert live.data["pids"] == [proc.pid]
        assert f"pid {proc.pid}" in live.summary
        [busy] = check_tcp("0.0.0.0", port, listen=True).find("tcp.in_use")
        assert busy.data["pids"] == [proc.pid]
        assert f"kill {proc.pid}" in (busy.fix or "")
