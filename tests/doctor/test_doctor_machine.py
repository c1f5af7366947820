"""``ipcwire doctor`` with no target: limits, leftovers (stale sockets, leaked segments), and
the mechanisms that work here; and how targets are dispatched."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests._proc import child, kill9, wait_line
from tests.doctor._helpers import doctor, doctor_json, findings

import ipcwire
from ipcwire.doctor import check_machine, diagnose
from ipcwire.doctor.machine import stale_sockets

SERVER = """
import ipcwire, sys
lst = ipcwire.listen({url!r})
print("ready", flush=True)
sys.stdin.read()
"""


def test_machine_report_lists_limits_and_mechanisms() -> None:
    code, data = doctor_json()
    assert data["reports"][0]["target"] == "this machine"
    [limits] = findings(data, "machine.limits")
    assert any(line.startswith("pipe buffer: ") for line in limits["evidence"])
    assert any("Unix socket path: at most 107 bytes" in line for line in limits["evidence"])
    [mechs] = findings(data, "machine.mechanisms")
    schemes = [line.split(":")[0] for line in mechs["evidence"]]
    assert schemes == [spec.scheme for spec in ipcwire.mechanisms()]
    assert code == (0 if data["ok"] else 1)


def test_stale_socket_files_are_found_and_live_ones_are_not(sock_dir: Path) -> None:
    stale, live = f"{sock_dir}/dead.sock", f"{sock_dir}/alive.sock"
    with child(SERVER.format(url=f"unix://{stale}")) as proc:
        assert wait_line(proc) == "ready"
        kill9(proc)
    with ipcwire.listen(f"unix://{live}"):
        found = stale_sockets([str(sock_dir.parent)])
        assert found is not None
        assert stale in found and live not in found
        [finding] = check_machine().find("machine.stale_sockets")
        # (evidence shows the first 20; data has them all)
        assert stale in finding.data["paths"] and live not in finding.data["paths"]
        assert live not in finding.evidence
    os.unlink(stale)  # the fix
    assert stale not in (stale_sockets([str(sock_dir.parent)]) or [])


def test_leaked_segment_makes_the_machine_report_fail() -> None:
    path = f"/dev/shm/psm_machine_{os.getpid()}"
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
    try:
        code, data = doctor_json()
        assert code == 1
        assert [f for f in findings(data, "shm.leaked") if f["data"]["path"] == path]
    finally:
        os.unlink(path)


def test_targets_over_tcp_and_unix_are_checked_as_such(sock_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert diagnose(f"ws://127.0.0.1:{port}/app").find("tcp.live")
        assert diagnose(f"grpc://127.0.0.1:{port}").find("tcp.live")
    assert diagnose(f"http+unix://{sock_dir}/none.sock").find("unix.missing")


def test_exit_status_and_unknown_schemes() -> None:
    out = doctor("signal:TERM")
    assert out.returncode == 2
    assert "no checks for signal: URLs" in out.stdout
    code, data = doctor_json("unix:///nonexistent-dir-ipcwire/x.sock", "--pid", str(os.getpid()))
    assert code == 1 and [r["target"] for r in data["reports"]][1] == f"pid {os.getpid()}"


def test_a_live_socket_in_another_network_namespace_is_not_called_stale(sock_dir: Path) -> None:
    # A server in a container sharing the directory: sock_diag (this namespace only) does not
    # see its socket, but it listens, and "rm PATH" would cut every client off.
    path = f"{sock_dir}/container.sock"
    server = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
print("ready", flush=True)
sys.stdin.read()
"""
    proc = subprocess.Popen(
        ["unshare", "--map-root-user", "--net", sys.executable, "-c", server, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":  # no network namespace for this user
            pytest.skip(f"unshare --net failed: {proc.communicate(timeout=10)[1]}")
        # (first: a probe's connection waiting in the backlog shows in /proc/net/unix)
        assert path not in (stale_sockets([str(sock_dir.parent)]) or [])
        assert diagnose(f"unix://{path}").find("unix.live")
    finally:
        proc.kill()
        proc.communicate()


def test_urls_that_connect_refuses_are_refused_not_diagnosed() -> None:
    # "unix:" was diagnosed as the current directory ("is a directory, not a socket"),
    # "mq:///a/b" as a missing queue, "spool:" as a directory named "" that does not exist.
    for target, words in (
        ("unix:", "names no socket path"),
        ("unix://tmp/x.sock", "write unix:///tmp/x.sock"),
        ("mq:///a/b", "one component without '/'"),
        ("spool:", "write a spool as spool:///absolute/dir"),
        ("spool://relative", "write a spool as spool:///absolute/dir"),
    ):
        out = doctor(target)
        assert out.returncode == 2, (target, out.stdout)
        assert words in out.stdout, (target, out.stdout)


def test_mechanisms_agree_with_ipcwire_platforms() -> None:
    # Doctor read only the registry (platform, Python packages), so without a D-Bus session
    # bus or a display it said "dbus: available", "clipboard: available" while `ipcwire
    # platforms` (which also runs each mechanism's probe()) said why not.
    env = {k: v for k, v in os.environ.items()
           if k not in ("DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY")}  # fmt: skip
    run = [sys.executable, "-m", "ipcwire"]
    out = subprocess.run([*run, "platforms", "--json"], capture_output=True, text=True,
                         env=env, timeout=60, check=True)  # fmt: skip
    platforms = json.loads(out.stdout)["mechanisms"]
    out = subprocess.run([*run, "doctor", "--json"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)  # fmt: skip
    [mechs] = findings(json.loads(out.stdout), "machine.mechanisms")
    expected = [f"{m['scheme']}: " + ("available" if m["available"] else f"no: {m['reason']}")
                for m in platforms]  # fmt: skip
    assert mechs["evidence"] == expected
    assert "dbus: no: no D-Bus session bus" in "\n".join(mechs["evidence"])
    assert sorted(mechs["data"]["unavailable"]) == sorted(
        m["scheme"] for m in platforms if not m["available"]
    )
    working = sum(m["available"] for m in platforms)
    assert mechs["summary"] == f"{working} of {len(platforms)} mechanisms work here"


def test_a_long_list_of_stale_sockets_is_capped_with_how_to_get_them_all(
    sock_dir: Path,
) -> None:
    # The machine report printed every stale socket file (333 lines on one machine).
    made = []
    for i in range(25):
        path = f"{sock_dir}/stale{i}.sock"
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path)  # bound, closed: nothing is bound to the file any more
        made.append(path)
    _, data = doctor_json()
    [stale] = findings(data, "machine.stale_sockets")
    paths = stale["data"]["paths"]
    assert set(made) <= set(paths)
    assert stale["evidence"][:20] == paths[:20]
    assert stale["evidence"][20:] == [f"... and {len(paths) - 20} more"]
    assert "ipcwire doctor --json" in stale["fix"]
    assert stale["summary"].startswith(f"{len(paths)} stale socket file(s)")
