"""``ipcwire cat``'s token from a file or the environment, not only from argv (which every
user on the machine reads in ps and /proc/PID/cmdline). Real processes and sockets."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import ipcwire

IPCWIRE = [sys.executable, "-m", "ipcwire"]


def _cat(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "IPCWIRE_TOKEN"}
    return subprocess.run(
        [*IPCWIRE, "cat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**environ, **(env or {})},
    )


def _token_file(directory: Path, text: str, mode: int = 0o600) -> Path:
    path = directory / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


def _echo_server(url: str, token: str) -> tuple[ipcwire.Listener, threading.Thread, list[bytes]]:
    """A listener that requires ``token`` and answers one client's message with b"back"."""
    listener = ipcwire.listen(url, token=token)
    got: list[bytes] = []

    def serve() -> None:
        with listener.accept(timeout=30) as ch:
            got.append(ch.recv(timeout=30))
            ch.send(b"back")

    thread = threading.Thread(target=serve)
    thread.start()
    return listener, thread, got


def test_token_file_authenticates(sock_dir: Path) -> None:
    url = f"unix://{sock_dir}/tf.sock"
    path = _token_file(sock_dir, "s3cret\n")  # as `echo s3cret > token` writes it
    listener, thread, got = _echo_server(url, "s3cret")
    with listener:
        out = _cat(url, "--token-file", str(path), "--wait", "30", stdin="hi\n")
        thread.join(30)
    assert out.returncode == 0, out.stderr
    assert (got, out.stdout, out.stderr) == ([b"hi"], "back\n", "")


def test_token_from_the_environment(sock_dir: Path) -> None:
    url = f"unix://{sock_dir}/env.sock"
    listener, thread, got = _echo_server(url, "from-env")
    with listener:
        out = _cat(url, "--wait", "30", stdin="hi\n", env={"IPCWIRE_TOKEN": "from-env"})
        thread.join(30)
    assert out.returncode == 0, out.stderr
    assert (got, out.stdout) == ([b"hi"], "back\n")


def test_a_wrong_token_in_the_file_is_refused(sock_dir: Path) -> None:
    url = f"unix://{sock_dir}/wrong.sock"
    path = _token_file(sock_dir, "not-it\n")
    with ipcwire.listen(url, token="s3cret"):
        out = _cat(url, "--token-file", str(path), "--timeout", "10")
    assert out.returncode == 1
    assert "AuthenticationFailed" in out.stderr and "Traceback" not in out.stderr


def test_token_and_token_file_are_exclusive(sock_dir: Path) -> None:
    path = _token_file(sock_dir, "s3cret\n")
    out = _cat(f"unix://{sock_dir}/x.sock", "--token", "a", "--token-file", str(path))
    assert out.returncode == 2
    assert "--token-file: not allowed with argument --token" in out.stderr


def test_a_token_file_others_can_read_is_refused(sock_dir: Path) -> None:
    """As ssh refuses a private key others can read: the token would prove nothing."""
    path = _token_file(sock_dir, "s3cret\n", 0o644)
    out = _cat("--listen", f"unix://{sock_dir}/open.sock", "--token-file", str(path))
    assert out.returncode == 2
    assert f"token file {path} is readable by every user" in out.stderr
    assert f"chmod 600 {path}" in out.stderr and "Traceback" not in out.stderr
    assert not (sock_dir / "open.sock").exists()  # refused before listening


def test_a_token_file_its_group_can_read_is_used_with_a_warning(sock_dir: Path) -> None:
    url = f"unix://{sock_dir}/grp.sock"
    path = _token_file(sock_dir, "s3cret\n", 0o640)
    listener, thread, got = _echo_server(url, "s3cret")
    with listener:
        out = _cat(url, "--token-file", str(path), "--wait", "30", stdin="hi\n")
        thread.join(30)
    assert out.returncode == 0, out.stderr
    assert got == [b"hi"]
    assert f"warning: the token file {path} is readable by group" in out.stderr


def test_empty_and_missing_tokens_are_refused_not_taken_for_none(sock_dir: Path) -> None:
    """An empty token ended up as no token: `--token "$UNSET"` listened for anyone."""
    url = f"unix://{sock_dir}/none.sock"
    empty = _token_file(sock_dir, "\n")
    for args, env, words in (
        (["--token-file", str(empty)], {}, f"token file {empty} is empty"),
        (["--token-file", str(sock_dir / "nope")], {}, "cannot read the token file"),
        ([], {"IPCWIRE_TOKEN": ""}, "IPCWIRE_TOKEN is set but empty"),
        (["--token", ""], {}, "must not be empty"),
    ):
        out = _cat("--listen", url, "--timeout", "0", *args, env=env)
        assert out.returncode in (1, 2), (args, out.stderr)
        assert words in out.stderr, (args, out.stderr)
        assert "Timeout" not in out.stderr and "Traceback" not in out.stderr
        assert not (sock_dir / "none.sock").exists()


def test_help_says_argv_is_visible() -> None:
    out = subprocess.run(
        [*IPCWIRE, "cat", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert "--token-file PATH" in out.stdout and "IPCWIRE_TOKEN" in out.stdout
    assert "other users" in out.stdout
