"""``ipcwire cat --listen`` waits for its client as socat and ``nc -l`` do; --help says every
default. Real processes and sockets."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from ipcwire.cli.main import build_parser

IPCWIRE = [sys.executable, "-m", "ipcwire"]


def _help_blocks(text: str) -> dict[str, str]:
    """The help of each option in ``--help`` output, by its first option string."""
    blocks: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"  (-\w, )?(--[\w-]+)", line)
        if m:
            name = m.group(2)
            blocks[name] = line
        elif name and line.startswith("    "):
            blocks[name] += " " + line.strip()
        else:
            name = None
    return blocks


def test_listen_waits_for_a_client_unless_timeout_is_given() -> None:
    """`cat --listen` gave up after 10 s ("Timeout: no client connected ... within 10.0 s")
    when the other terminal was slower; connecting keeps its 10 s by default."""
    parser = build_parser()
    listen = parser.parse_args(["cat", "--listen", "tcp://127.0.0.1:7000"])
    assert listen.timeout is None  # accept(timeout=None): until interrupted
    connect = parser.parse_args(["cat", "tcp://127.0.0.1:7000"])
    assert connect.timeout is None  # connect()'s own default: 10 s
    # "inf: no limit" reached connect() as None, its 10 s default: a unix listener with a
    # full backlog ended cat after 10 s.
    inf = parser.parse_args(["cat", "tcp://127.0.0.1:7000", "--timeout", "inf"])
    assert inf.timeout == float("inf")


def test_listen_timeout_when_given_still_ends_the_wait(sock_dir: Path) -> None:
    url = f"unix://{sock_dir}/quiet.sock"
    out = subprocess.run(
        [*IPCWIRE, "cat", "--listen", url, "--timeout", "0.2"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert f"no client connected to {url} within 0.2 s" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (sock_dir / "quiet.sock").exists()


def test_ctrl_c_while_waiting_for_a_client_exits_130_and_cleans_up(sock_dir: Path) -> None:
    url = f"unix://{sock_dir}/wait.sock"
    server = subprocess.Popen(
        [*IPCWIRE, "cat", "--listen", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        assert "listening at" in server.stderr.readline()
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 130, err
    assert "Traceback" not in err
    assert not (sock_dir / "wait.sock").exists()


def test_help_shows_every_default_and_no_rest_markup() -> None:
    """--help showed neither --timeout's 10 nor --wait's 2, --framing had no help at all, and
    the description read "``ipcwire cat``"."""
    out = subprocess.run(
        [*IPCWIRE, "cat", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"},
    )
    assert "``" not in out.stdout and ":func:" not in out.stdout
    blocks = _help_blocks(out.stdout)
    assert set(blocks) >= {"--listen", "--codec", "--framing", "--timeout", "--wait"}
    for option, text in blocks.items():
        if option != "--help":
            assert "default" in text, f"{option} shows no default: {text!r}"
    assert "10" in blocks["--timeout"] and "until interrupted" in blocks["--timeout"]
    assert "default: 2" in blocks["--wait"]
