"""``ipcwire doctor unix://``: each broken situation made for real, named, and fixed."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from tests._proc import NOBODY, child, kill9, wait_line
from tests.doctor._helpers import connect_as_nobody, doctor, doctor_json, findings

import ipcwire
from ipcwire.doctor import check_unix

SERVER = """
import ipcwire, sys
lst = ipcwire.listen({url!r})
print("ready", flush=True)
sys.stdin.read()
"""


def _accept_one(lst: ipcwire.Listener) -> None:
    """Accept the client that completes a handshake (doctor's probe connects and leaves)."""
    for _ in range(5):
        try:
            lst.accept(timeout=10).close()
            return
        except ipcwire.IpcwireError:
            continue


def test_stale_socket_of_a_killed_server_is_named_and_removing_it_fixes_it(
    sock_dir: Path,
) -> None:
    path = f"{sock_dir}/app.sock"
    url = f"unix://{path}"
    with child(SERVER.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        kill9(proc)
    code, data = doctor_json(url)
    assert code == 1
    [stale] = findings(data, "unix.stale")
    assert stale["status"] == "problem"
    assert "nothing listens" in stale["summary"]
    assert "connect() -> ECONNREFUSED" in stale["evidence"]
    assert stale["fix"].startswith(f"rm {path}")
    # The fix: remove the file, start the server again.
    os.unlink(path)
    with child(SERVER.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        report = check_unix(path)
        [live] = report.find("unix.live")
        assert live.data["pid"] == proc.pid
        assert report.ok


def test_live_listener_is_named_and_a_second_server_is_told_who_holds_it(
    sock_dir: Path,
) -> None:
    path = f"{sock_dir}/busy.sock"
    url = f"unix://{path}"
    with child(SERVER.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        assert check_unix(path).find("unix.live")[0].data["pid"] == proc.pid
        report = check_unix(path, listen=True)
        [busy] = report.find("unix.in_use")
        assert busy.status == "problem" and busy.data["pid"] == proc.pid
        assert busy.fix is not None and f"kill {proc.pid}" in busy.fix
        kill9(proc)  # the fix
    report = check_unix(path, listen=True)
    assert report.ok and report.find("unix.stale")[0].status == "info"
    ipcwire.listen(url).close()  # listen() now removes the stale file and binds


def test_socket_of_another_uid_is_explained_and_mode_0660_with_a_group_fixes_it(
    sock_dir: Path,
) -> None:
    os.chmod(sock_dir, 0o755)  # the directory lets everyone through; the socket is 0600
    path = f"{sock_dir}/private.sock"
    url = f"unix://{path}"
    with ipcwire.listen(url) as lst:
        code, data = doctor_json(url, as_nobody=True)
        assert code == 1
        [denied] = findings(data, "unix.permission")
        assert "write permission" in denied["summary"]
        assert f"{path}: socket, mode 0600 owned by uid 0 gid 0" in denied["evidence"]
        assert f"you are uid {NOBODY} (groups {NOBODY})" in denied["evidence"]
        assert "mode=0o660" in denied["fix"]
        assert connect_as_nobody(url).startswith("PermissionDenied")
        lst.close()
    # The fix the doctor gives: mode 0660 and a group the client is in.
    with ipcwire.listen(url, mode=0o660) as lst:
        os.chown(path, -1, NOBODY)
        serve = threading.Thread(target=_accept_one, args=(lst,))
        serve.start()
        code, data = doctor_json(url, as_nobody=True)
        assert code == 0, data
        assert findings(data, "unix.live")
        assert connect_as_nobody(url) == "connected"
        serve.join(10)


def test_directory_the_caller_cannot_enter_is_named(sock_dir: Path) -> None:
    path = f"{sock_dir}/hidden.sock"  # sock_dir is 0700 root
    with ipcwire.listen(f"unix://{path}", mode=0o666):
        code, data = doctor_json(path, as_nobody=True)
        assert code == 1
        [denied] = findings(data, "unix.directory_denied")
        assert denied["data"]["directory"] == str(sock_dir)
        assert denied["data"]["mode"] == 0o700
        assert f"chmod o+x {sock_dir}" in denied["fix"]
        os.chmod(sock_dir, 0o711)  # the fix
        code, data = doctor_json(path, as_nobody=True)
        assert code == 0 and findings(data, "unix.live")


def test_missing_file_not_a_socket_and_long_path(sock_dir: Path) -> None:
    missing = check_unix(f"{sock_dir}/none.sock")
    assert [f.check for f in missing.problems] == ["unix.missing"]
    assert check_unix(f"{sock_dir}/none.sock", listen=True).ok
    regular = sock_dir / "file.sock"
    regular.write_text("not a socket")
    [wrong] = check_unix(str(regular)).problems
    assert wrong.check == "unix.not_a_socket" and "a regular file" in wrong.summary
    long = "/tmp/" + "d" * 120 + "/s.sock"
    [too_long] = check_unix(long).problems
    assert too_long.check == "unix.path_too_long" and too_long.data["limit"] == 107
    assert "abstract name" in str(too_long.fix)
    gone = check_unix(f"{sock_dir}/nodir/x.sock")
    assert [f.check for f in gone.problems] == ["unix.directory_missing"]


def test_abstract_names() -> None:
    name = f"ipcwire-doctor-{os.getpid()}"
    assert check_unix(f"@{name}").find("unix.missing")
    with ipcwire.listen(f"unix:@{name}"):
        report = check_unix(f"@{name}")
        assert report.find("unix.live")[0].data["pid"] == os.getpid()
        assert check_unix(f"@{name}", listen=True).find("unix.in_use")


def test_human_output_has_evidence_and_fix(sock_dir: Path) -> None:
    regular = sock_dir / "plain"
    regular.write_text("x")
    out = doctor(f"unix://{regular}")
    assert out.returncode == 1
    text = " ".join(out.stdout.split())
    assert "✗" in text and "is a regular file, not a socket" in text
    assert "fix: choose another path" in text


def test_listener_that_does_not_accept_and_a_removed_file(sock_dir: Path) -> None:
    path = f"{sock_dir}/stuck.sock"
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen(0)
        waiting = []
        for _ in range(4):  # fill the backlog: nobody accepts
            c = socket.socket(socket.AF_UNIX)
            c.setblocking(False)
            try:
                c.connect(path)
            except BlockingIOError:
                c.close()
                break
            waiting.append(c)
        [full] = check_unix(path).find("unix.backlog_full")
        assert full.status == "warning" and full.data["pid"] == os.getpid()
        for c in waiting:
            c.close()
        os.unlink(path)  # someone removed the file of a live listener
        [gone] = check_unix(path).problems
        assert gone.check == "unix.unlinked" and gone.data["pids"] == [os.getpid()]


def test_a_socket_bound_but_not_listening_is_not_called_stale(sock_dir: Path) -> None:
    # A live process holds the file's socket without listen() (yet): "rm" would cut it off.
    path = f"{sock_dir}/bound.sock"
    code = f"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind({path!r})
print("ready", flush=True)
sys.stdin.read()
"""
    with child(code) as proc:
        assert wait_line(proc) == "ready"
        _, data = doctor_json(f"unix://{path}")
        assert not findings(data, "unix.stale")
        [finding] = findings(data, "unix.not_listening")
        assert finding["status"] == "problem"
        assert finding["data"]["pids"] == [proc.pid]
        assert "do not remove the file" in finding["fix"]


def test_the_printed_fix_is_one_line_when_piped(sock_dir: Path) -> None:
    # Piped or saved (`ipcwire doctor ... > report.txt`), lines were folded at 80 columns:
    # "fix: rm" and the path landed on separate lines, a command nobody can paste.
    long_dir = sock_dir / ("d" * 60)
    long_dir.mkdir()
    path = f"{long_dir}/app.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # bound, never listened, closed: a stale socket file
    try:
        out = doctor(f"unix://{path}")
        assert out.returncode == 1
        assert f"fix: rm {path}, then start the server" in out.stdout
    finally:
        os.unlink(path)
        long_dir.rmdir()


ALLOW_ROOT = """
import ipcwire, sys
lst = ipcwire.listen({url!r}, mode=0o666, allow_uids=[0])
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_uid_the_server_refuses_is_told_so_with_the_fix(sock_dir: Path) -> None:
    # Doctor said "✓ ... is listening ... connect() -> accepted" (exit 0) to a uid outside the
    # server's allow_uids, while a real client of that uid got PermissionDenied.
    os.chmod(sock_dir, 0o755)
    path = f"{sock_dir}/rootonly.sock"
    url = f"unix://{path}"
    with child(ALLOW_ROOT.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        assert connect_as_nobody(url).startswith("PermissionDenied")
        code, data = doctor_json(url, as_nobody=True)
        assert code == 1, data
        assert not findings(data, "unix.live")
        [refused] = findings(data, "unix.refused")
        assert refused["status"] == "problem" and refused["data"]["pid"] == proc.pid
        # (the refusal no longer tells the peer the server's list, f2348a8)
        assert f"does not allow uid {NOBODY}" in " ".join(refused["evidence"])
        assert "allow_uids" in refused["fix"] and str(NOBODY) in refused["fix"]
        # root is allowed: live, as before
        [live] = check_unix(path).find("unix.live")
        assert live.data["pid"] == proc.pid
    name = f"ipcwire-doctor-refuse-{os.getpid()}"  # abstract: only the server's uid by default
    with ipcwire.listen(f"unix:@{name}"):
        code, data = doctor_json(f"unix:@{name}", as_nobody=True)
        assert code == 1 and findings(data, "unix.refused"), data


def test_an_ipcwire_listener_whose_file_was_removed_is_named_not_missing(
    sock_dir: Path,
) -> None:
    # rm of a running ipcwire server's socket file: doctor said "no socket file ... fix: start
    # the server", and following it gave two servers. ipcwire binds in a private directory
    # and links the file into place, so /proc/net/unix never named the path itself.
    path = f"{sock_dir}/app.sock"
    url = f"unix://{path}"
    with child(SERVER.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        os.unlink(path)
        code, data = doctor_json(url)
        assert code == 1
        assert not findings(data, "unix.missing")
        [gone] = findings(data, "unix.unlinked")
        assert gone["data"]["pids"] == [proc.pid]
        assert f"kill {proc.pid}" in gone["fix"] and "start the server" not in gone["fix"]
        [warn] = check_unix(path, listen=True).find("unix.unlinked")
        assert warn.status == "warning" and warn.data["pids"] == [proc.pid]
        # another listener in the same directory, whose file is there, is not mistaken for it
        with ipcwire.listen(f"unix://{sock_dir}/other.sock"):
            [gone2] = check_unix(path).find("unix.unlinked")
            assert gone2.data["pids"] == [proc.pid]
    assert check_unix(path).find("unix.missing")  # the server stopped: nothing left


def test_listen_on_another_users_stale_socket_in_a_sticky_directory(sock_dir: Path) -> None:
    # doctor --listen as uid nobody gave the fix for connecting ("connecting needs write
    # permission ... mode=0o660") on root's 0600 file, and "listen() will remove it" on root's
    # 0666 one, which listen() cannot remove from a sticky directory; nor said it was stale.
    os.chmod(sock_dir, 0o1777)
    for name, mode in (("private.sock", 0o600), ("open.sock", 0o666)):
        path = f"{sock_dir}/{name}"
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path)  # closed: stale
        os.chmod(path, mode)
        code, data = doctor_json(path, "--listen", as_nobody=True)
        assert code == 1, data
        [denied] = findings(data, "unix.permission")
        assert "mode=0o660" not in denied["fix"] and "connecting" not in denied["summary"]
        assert "choose another path" in denied["fix"] and f"rm {path}" in denied["fix"]
        assert denied["data"]["stale"] is True
        assert "stale" in denied["summary"]
    # a live root server there: not stale, and no rm
    path = f"{sock_dir}/live.sock"
    with ipcwire.listen(f"unix://{path}"):
        code, data = doctor_json(path, "--listen", as_nobody=True)
        [denied] = findings(data, "unix.permission")
        assert denied["data"]["stale"] is False and "rm " not in denied["fix"]
