"""Unix sockets seen from a container or sandbox: a socket file bind-mounted on its own,
abstract names in another network namespace, servers of uids not mapped into this user
namespace. Real namespaces, made with util-linux ``unshare``; each child exits with its
namespaces."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import ipcwire

PROLOGUE = (
    "import os, sys, json, errno, mmap\n"
    "import ipcwire, ipcwire.unix.blocking, ipcwire.doctor, ipcwire.doctor.unix\n"
    "from ipcwire.doctor import diagnose\n"
    "ipcwire.mechanisms()\n"
    "def attempt(url, **kw):\n"
    "    try:\n"
    "        ipcwire.connect(url, timeout=5, **kw).close()\n"
    "        return 'connected'\n"
    "    except ipcwire.IpcwireError as e:\n"
    "        return f'{type(e).__name__}: {e}'\n"
    "def checks(url):\n"
    "    return [[f.check, f.summary, f.fix or ''] for f in diagnose(url).findings]\n"
)


def start(code: str, *argv: str) -> subprocess.Popen[str]:
    """``argv`` (an ``unshare ...`` command line, ending before the interpreter) running
    ``code`` after PROLOGUE."""
    return subprocess.Popen(
        [*argv, sys.executable, "-c", PROLOGUE + textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def answer(proc: subprocess.Popen[str], send: str = "") -> Any:
    out, err = proc.communicate(send, timeout=30)
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def test_a_bind_mounted_socket_file_gone_stale_says_mount_the_directory(sock_dir: Path) -> None:
    # -v /run/app.sock:/run/app.sock: the container keeps the first server's socket; the
    # restarted server's listen() made a new file. The client said "stale, left by a server
    # that died? Restart the server" (it was restarted), doctor "rm PATH" (EBUSY).
    # (The mount's target is another file, as in a container's own file tree: unlinking the
    # very dentry another mount namespace has a mount on would detach that mount.)
    host, inside = f"{sock_dir}/app.sock", f"{sock_dir}/in.sock"
    Path(inside).touch()
    url = f"unix://{inside}"
    first = ipcwire.listen(f"unix://{host}")
    proc = start(
        f"""
        print("mounted", flush=True)
        sys.stdin.readline()
        print(json.dumps([attempt({url!r}), checks({url!r})]))
        """,
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        'mount --bind "$0" "$1" && shift && exec "$@"', host, inside,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "mounted"
    first.close()
    with ipcwire.listen(f"unix://{host}"):  # the server, restarted
        error, findings = answer(proc, "go\n")
    assert error.startswith("ConnectionRefused: ")
    assert "is a mount point" in error and "Bind-mount the directory" in error
    assert "Restart the server" not in error
    [mounted] = [f for f in findings if f[0] == "unix.mounted_file"]
    assert "bind-mount the directory" in mounted[2]
    assert not [f for f in findings if f[0] == "unix.stale"]


def test_listening_on_a_stale_socket_file_that_is_a_mount_point_says_so(sock_dir: Path) -> None:
    # listen() removes a stale socket file; one bind-mounted on its own cannot be removed:
    # that was a raw OSError EBUSY.
    stale, inside = f"{sock_dir}/stale.sock", f"{sock_dir}/in.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(stale)  # (closed unlistened: nothing answers there)
    Path(inside).touch()
    url = f"unix://{inside}"
    code = f"""
        try:
            ipcwire.listen({url!r}).close()
            print(json.dumps(["listened"]))
        except ipcwire.IpcwireError as e:
            print(json.dumps([f"{{type(e).__name__}}: {{e}}"]))
        """
    proc = start(
        code, "unshare", "--mount", "--propagation", "private", "sh", "-c",
        'mount --bind "$0" "$1" && shift && exec "$@"', stale, inside,
    )  # fmt: skip
    (error,) = answer(proc)
    assert error.startswith("AddressInUse"), error
    assert "bind-mounted on its own" in error and f"umount {inside}" in error


def test_an_abstract_name_in_another_network_namespace_is_not_called_stale() -> None:
    # A host server on unix:@name, a client in its own network namespace: it said "the
    # abstract name exists but no process accepts on it (stale, left by a server that died?)
    # ... listen() removes stale files itself": abstract names are per network namespace.
    url = f"unix:@iw-netns-{id(object())}"
    with ipcwire.listen(url):
        error, findings = answer(
            start(f"print(json.dumps([attempt({url!r}), checks({url!r})]))", "unshare", "--net")
        )
    assert error.startswith("ConnectionRefused: nothing listens on the abstract name"), error
    assert "in this process's network namespace" in error
    assert "use a path socket in a directory both share" in error
    assert "stale" not in error and "files" not in error
    [missing] = [f for f in findings if f[0] == "unix.missing"]
    assert "network namespace" in missing[2]


SERVER_AS_1000 = """
import os, sys, ipcwire, ipcwire.unix.blocking
ipcwire.mechanisms()
os.setgroups([]); os.setgid(1000); os.setuid(1000)
lst = ipcwire.listen(sys.argv[1], mode=int(sys.argv[2], 8))
print("ready", flush=True)
sys.stdin.read()
"""


def server_as_1000(url: str, mode: str = "666") -> subprocess.Popen[str]:
    """A server of uid 1000, a uid no ``unshare --user`` below maps."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_AS_1000, url, mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.communicate()[1]
    return proc


def test_an_unmapped_server_uid_is_never_advised_to_be_trusted(sock_dir: Path) -> None:
    # The server's uid is not mapped into the client's user namespace: the kernel says 65534.
    # It said "If uid 65534 runs the server you meant, pass allow_uids=[65534]", and doctor
    # "run as uid 65534": trusting the overflow uid trusts every unmapped user.
    sock_dir.chmod(0o777)
    url, closed = f"unix://{sock_dir}/srv.sock", f"unix://{sock_dir}/closed.sock"
    server, shut = server_as_1000(url), server_as_1000(closed, "600")
    try:
        error, findings = answer(
            start(
                f"print(json.dumps([attempt({url!r}, allow_uids=[0]), checks({closed!r})]))",
                "unshare",
                "--user",
                "--map-root-user",
            )
        )
    finally:
        for proc in (server, shut):
            proc.kill()
            proc.communicate()
    assert error.startswith("PermissionDenied: refusing the server"), error
    assert "not mapped into this user namespace" in error and "the overflow uid" in error
    assert "allow_uids=[65534]" not in error
    [perm] = [f for f in findings if f[0] == "unix.permission"]
    assert "run as uid 65534" not in perm[2] and "not mapped into this user namespace" in perm[2]


CLIENT_AS_1000 = """
import os, sys, ipcwire, ipcwire.unix.blocking
ipcwire.mechanisms()
os.setgroups([]); os.setgid(1000); os.setuid(1000)
try:
    ipcwire.connect(sys.argv[1], timeout=5).recv(timeout=5)
except ipcwire.IpcwireError as e:
    print(f"{type(e).__name__}: {e}")
"""


def test_an_unmapped_client_uid_is_never_advised_to_be_allowed(sock_dir: Path) -> None:
    # The listener runs in a user namespace that maps only root; a client of uid 1000 shows
    # in it as the overflow uid. The listener's log said "add it there (listen(...,
    # allow_uids=[..., 65534]))": that would let in every unmapped user.
    sock_dir.chmod(0o777)
    url = f"unix://{sock_dir}/ns.sock"
    server = start(
        f"""
        import logging
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        lst = ipcwire.listen({url!r}, mode=0o666, allow_uids=[0])
        print("ready", flush=True)
        sys.stdin.readline()
        lst.close()
        print(json.dumps("closed"))
        """,
        "unshare", "--user", "--map-root-user",
    )  # fmt: skip
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    client = subprocess.run([sys.executable, "-c", CLIENT_AS_1000, url], capture_output=True,
                            text=True, timeout=30, check=True)  # fmt: skip
    out, _ = server.communicate("\n", timeout=30)
    assert client.stdout.startswith("PermissionDenied"), (client.stdout, client.stderr)
    assert "not mapped into the server's user namespace" in client.stdout
    [logged] = [line for line in out.splitlines() if "overflow uid" in line]
    assert "not mapped into this user namespace" in logged and "never 65534" in logged
    assert "allow_uids=[..., 65534]" not in out, out


def test_an_unmapped_server_is_not_your_own_uid_on_an_abstract_name() -> None:
    # The client is uid 65534 in its user namespace; a server of uid 1000 (unmapped) shows as
    # 65534 too, and passed the default check "your own uid or root".
    url = f"unix:@iw-userns-{id(object())}"
    server = server_as_1000(url)
    try:
        (error,) = answer(
            start(
                f"print(json.dumps([attempt({url!r})]))",
                "unshare",
                "--user",
                "--map-user=65534",
                "--map-group=65534",
            )
        )
    finally:
        server.kill()
        server.communicate()
    assert error.startswith("PermissionDenied: refusing the server"), error
    assert "not mapped into this user namespace" in error


def test_a_server_in_another_pid_namespace_is_named_as_such(sock_dir: Path) -> None:
    # The server runs outside the client's pid namespace: the kernel gives pid 0, /proc (the
    # namespace's own) has no such process. It said "a process ipcwire cannot see", true but
    # not why.
    url = f"unix://{sock_dir}/pidns.sock"
    with ipcwire.listen(url):
        pid, error, findings = answer(
            start(
                f"""
                with ipcwire.connect({url!r}, timeout=5) as ch:
                    pid = ch.peer.pid
                try:
                    ipcwire.listen({url!r})
                    error = "listening"
                except ipcwire.IpcwireError as e:
                    error = f"{{type(e).__name__}}: {{e}}"
                print(json.dumps([pid, error, checks({url!r})]))
                """,
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
            )
        )
    assert pid is None
    assert error.startswith("AddressInUse: ")
    assert "a process ipcwire cannot see (in another pid namespace, or not yours" in error
    [live] = [f for f in findings if f[0] == "unix.live"]
    assert "(in another pid namespace, or not yours to inspect) is listening" in live[1]
