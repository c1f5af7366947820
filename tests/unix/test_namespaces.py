"""Unix sockets seen from a container or sandbox: a socket file bind-mounted on its own,
abstract names in another network namespace, servers of uids not mapped into this user
namespace. Real namespaces, made with util-linux ``unshare``; each child exits with its
namespaces."""

from __future__ import annotations

import json
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
