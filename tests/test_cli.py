"""The `ipcwire` command, run as a user would: real processes, real sockets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

IPCWIRE = [sys.executable, "-m", "ipcwire"]


def _run(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IPCWIRE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        errors="surrogateescape",  # stdin may carry bytes that are not UTF-8
        timeout=timeout,
        check=False,
    )


def test_console_script_is_installed() -> None:
    exe = shutil.which("ipcwire", path=os.path.dirname(sys.executable))
    assert exe is not None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ipcwire ")


def test_platforms_json_reads_the_registry() -> None:
    out = _run("platforms", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    rows = {m["scheme"]: m for m in data["mechanisms"]}
    assert rows["unix"]["available"] is True
    assert rows["unix"]["capabilities"]["peer_credentials"] is True
    assert rows["tcp"]["capabilities"]["crosses_machines"] is True


def _cat_pair(url: str, server_in: str, client_in: str, *extra: str) -> tuple[str, str]:
    server = subprocess.Popen(
        [*IPCWIRE, "cat", "--listen", url, "--wait", "1", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()  # "ipcwire cat: listening at URL" once it listens
        assert "listening at" in line, line
        real_url = line.rsplit(" ", 1)[1].strip()
        assert server.stdin is not None
        server.stdin.write(server_in)
        server.stdin.close()
        client = _run("cat", real_url, "--wait", "1", *extra, stdin=client_in)
        assert client.returncode == 0, client.stderr
        server.wait(timeout=30)  # outputs are a few lines: no pipe can fill up
        assert server.stdout is not None
        s_out, s_err = server.stdout.read(), server.stderr.read()
        assert server.returncode == 0, s_err
        return s_out, client.stdout
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_cat_json_lines_both_ways(sock_dir: Path) -> None:
    s_out, c_out = _cat_pair(
        f"unix://{sock_dir}/cat.sock",
        '{"from": "server"}\n',
        # a JSON string that is not UTF-8, then a good line, then a line that is not JSON
        '"\udcb2"\n{"from": "client", "n": [1, 2]}\nnot json\n',
        "--codec",
        "json",
    )
    assert s_out == '{"from":"client","n":[1,2]}\n'
    assert c_out == '{"from":"server"}\n'


def test_cat_raw_lines_over_tcp() -> None:
    s_out, c_out = _cat_pair("tcp://127.0.0.1:0", "pong\n", "ping\nping again\n")
    assert s_out == "ping\nping again\n"
    assert c_out == "pong\n"


def test_cat_reports_errors_with_the_fix(sock_dir: Path) -> None:
    out = _run("cat", f"unix://{sock_dir}/nothing.sock", "--timeout", "2")
    assert out.returncode == 1
    assert "ConnectionRefused" in out.stderr
    assert "does not exist" in out.stderr


def test_cat_listen_keeps_the_listener_open_while_piping() -> None:
    # Closing an HTTP or gRPC listener ends the channels it accepted: cat -l must keep it.
    for url in ("http://127.0.0.1:0/", "grpc://127.0.0.1:0"):
        s_out, c_out = _cat_pair(url, "pong\n", "ping\n")
        assert (s_out, c_out) == ("ping\n", "pong\n"), url


def test_cat_with_stdin_closed_receives_and_ends(sock_dir: Path) -> None:
    # `ipcwire cat URL <&-`: Python's sys.stdin is None. Nothing to send; replies still come.
    url = f"unix://{sock_dir}/closed.sock"
    server = subprocess.Popen(
        [*IPCWIRE, "cat", "--listen", url, "--wait", "60"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None and server.stdin is not None
        assert "listening at" in server.stderr.readline()
        server.stdin.write("hello\n")
        server.stdin.flush()  # the server stays up: only the client's --wait can end the client
        command = " ".join([*IPCWIRE, "cat", url, "--wait", "0.5"]) + " <&-"
        client = subprocess.run(
            ["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout == "hello\n"
        assert "Traceback" not in client.stderr
    finally:
        server.kill()
        server.communicate()


def test_cat_reports_a_stdin_it_cannot_read(sock_dir: Path) -> None:
    url = f"unix://{sock_dir}/eisdir.sock"
    server = subprocess.Popen(
        [*IPCWIRE, "cat", "--listen", url, "--wait", "60"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        assert "listening at" in server.stderr.readline()
        # stdin opened write-only: os.read() fails with EBADF.
        fd = os.open(sock_dir / "out", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            client = subprocess.run(
                [*IPCWIRE, "cat", url, "--wait", "0.5"],
                stdin=fd,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        finally:
            os.close(fd)
        assert client.returncode == 1, client.stderr
        assert "cannot read stdin" in client.stderr
        assert "Traceback" not in client.stderr
    finally:
        server.kill()
        server.communicate()


def test_cat_msgpack_skips_a_message_json_cannot_show(sock_dir: Path) -> None:
    import ipcwire

    url = f"unix://{sock_dir}/mp.sock"
    with ipcwire.listen(url, codec="msgpack") as listener:
        client = subprocess.Popen(
            [*IPCWIRE, "cat", url, "--codec", "msgpack", "--wait", "30"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with listener.accept(timeout=30) as ch:
                ch.send({(1, 2): "an array as a key"})
                ch.send({"after": 1})
            out, err = client.communicate(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
    assert client.returncode == 0, err
    assert out == '{"after":1}\n'
    assert "skipped a message JSON cannot show" in err
    assert "Traceback" not in err


def test_cat_to_a_one_way_fifo_sends_stdin(sock_dir: Path) -> None:
    # The writing end of fifo:// cannot receive: cat sends its stdin and ends, with no error.
    import ipcwire

    url = f"fifo://{sock_dir}/control.fifo"
    with ipcwire.listen(url) as listener:
        client = subprocess.run(
            [*IPCWIRE, "cat", url, "--wait", "0.5"],
            input="one\ntwo\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        with listener.accept(timeout=30) as ch:
            assert [ch.recv(timeout=30), ch.recv(timeout=30)] == [b"one", b"two"]


def test_cat_timeout_takes_inf_and_refuses_nan(sock_dir: Path) -> None:
    # inf reached the socket as settimeout(inf): OverflowError traceback; nan a ValueError one.
    out = _run("cat", f"unix://{sock_dir}/none.sock", "--timeout", "inf")
    assert out.returncode == 1
    assert "ConnectionRefused" in out.stderr and "Traceback" not in out.stderr
    out = _run("cat", f"unix://{sock_dir}/none.sock", "--timeout", "nan")
    assert out.returncode == 2
    assert "not a number of seconds" in out.stderr and "Traceback" not in out.stderr


def test_a_reader_that_went_away_ends_the_command_quietly() -> None:
    # `ipcwire doctor --json | head -1`: stdout's reader is gone before anything is written.
    # The text reports too: rich ended them with exit status 1, doctor's "a problem found".
    for args in (
        ["doctor", "--json"],
        ["platforms", "--json"],
        ["doctor", "--pid", str(os.getpid())],
        ["platforms"],
        ["choose"],
    ):
        r, w = os.pipe()
        os.close(r)
        try:
            out = subprocess.run(
                [*IPCWIRE, *args],
                stdout=w,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            os.close(w)
        assert out.stderr == "", out.stderr
        assert out.returncode == 141, args  # 128 + SIGPIPE, as `yes | head` reports


def test_cat_msgpack_skips_a_line_msgpack_cannot_carry(sock_dir: Path) -> None:
    # An integer over 64 bits is JSON, not msgpack: the stdin thread stopped at it (exit 1),
    # and every later line was never sent.
    s_out, _ = _cat_pair(
        f"unix://{sock_dir}/mp2.sock",
        "",
        '99999999999999999999999\n{"after": 1}\n',
        "--codec",
        "msgpack",
    )
    assert s_out == '{"after":1}\n'


def test_cat_sigterm_closes_what_it_opened(sock_dir: Path) -> None:
    # kill, timeout(1) and service managers send SIGTERM: it ended cat at once and left the
    # listener's socket file (or FIFO, or message queue) behind.
    for url, path in (
        (f"unix://{sock_dir}/term.sock", sock_dir / "term.sock"),
        (f"fifo://{sock_dir}/term.fifo", sock_dir / "term.fifo"),
    ):
        server = subprocess.Popen(
            [*IPCWIRE, "cat", "--listen", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stderr is not None
            assert "listening at" in server.stderr.readline()
            assert os.path.lexists(path)
            server.terminate()
            _, err = server.communicate(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
                server.communicate()
        assert server.returncode == 143, err  # 128 + SIGTERM
        assert not os.path.lexists(path), url


def test_cat_over_signals_speaks_signal_names() -> None:
    # Received signals were printed as bytes(signal number): SIGUSR1 as ten NUL bytes; and a
    # line "USR1" was sent as b"USR1", which the sender refused ("unknown signal b'USR1'").
    receiver = subprocess.Popen(
        [*IPCWIRE, "cat", "--listen", "signal:USR1,HUP", "--wait", "60"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stderr is not None and receiver.stdout is not None
        assert "listening at" in receiver.stderr.readline()  # its handlers are installed
        sender = _run("cat", f"signal:{receiver.pid}", "--wait", "0", stdin="USR1\n\nHUP\n")
        assert sender.returncode == 0, sender.stderr
        # (in either order: sent back to back, both may be pending when the receiver runs,
        # and the kernel then delivers the lower-numbered SIGHUP first)
        got = sorted([receiver.stdout.readline(), receiver.stdout.readline()])
        assert got == ["SIGHUP\n", "SIGUSR1\n"]
    finally:
        receiver.kill()
        receiver.communicate()


def test_cat_reconnect_waits_for_a_server_that_comes_up_later(sock_dir: Path) -> None:
    """The refusal told the user to pass reconnect=SECONDS, which cat had no way to take."""
    url = f"unix://{sock_dir}/late.sock"
    client = subprocess.Popen(
        [*IPCWIRE, "cat", url, "--reconnect", "30", "--wait", "inf"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdin is not None
        client.stdin.write("hello\n")
        client.stdin.close()
        # started after the client: it is being refused (or about to be) meanwhile
        server = _run("cat", "--listen", url, "--wait", "1", stdin="bye\n")
        assert server.returncode == 0, server.stderr
        assert server.stdout == "hello\n"
        assert client.stdout is not None and client.stderr is not None
        out, err = client.stdout.read(), client.stderr.read()  # until the server closed
        assert client.wait(30) == 0, err
        assert out == "bye\n"
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()


def test_cat_refused_advises_its_own_flag(sock_dir: Path) -> None:
    """The refusal's advice named the API's keyword (reconnect=SECONDS), not cat's flag."""
    out = _run("cat", f"unix://{sock_dir}/none.sock", stdin="")
    assert out.returncode != 0
    assert "--reconnect SECONDS" in out.stderr and "reconnect=SECONDS" not in out.stderr


def test_platforms_text_shows_every_reason_whole_at_80_columns() -> None:
    """The "why not" column was cut at 80 columns ("dbus-ru…"): the fix did not show."""
    out = subprocess.run(
        [*IPCWIRE, "platforms"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout
    flat = " ".join(out.stdout.split())
    assert "xpc: macOS XPC is not available on linux (it exists only on darwin)" in flat
    assert "use unix:// sockets meanwhile, on macOS too" in flat  # its end, uncut


def test_doctor_help_names_every_scheme_doctor_checks() -> None:
    """The help listed "unix://, tcp://, shm://, mq://, spool://, ws://...": not udp://,
    dbus:// or clipboard:, which doctor checks too. The list is doctor's own: the schemes its
    "no checks for" message names, and those it checks as a Unix socket or as TCP."""
    import re

    import pytest

    from ipcwire.doctor import _OVER_TCP, _OVER_UNIX, diagnose
    from ipcwire.errors import InvalidURL

    with pytest.raises(InvalidURL) as refused:
        diagnose("nosuch://x")
    known = str(refused.value).partition("it knows")[2]
    schemes = set(re.findall(r"[a-z][a-z+]*", known)) - {"and"}
    assert {"unix", "tcp", "udp", "dbus", "clipboard", "shm", "mq", "spool", "fifo"} <= schemes
    out = subprocess.run(
        [*IPCWIRE, "doctor", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    flat = " ".join(out.stdout.split())
    named = set(re.findall(r"([a-z][a-z+]*)(?::|\b)", flat))
    missing = sorted((schemes | _OVER_UNIX | _OVER_TCP) - named)
    assert not missing, f"doctor --help does not name {missing}: {flat}"
    assert "..." not in flat


def test_cat_listening_as_the_sending_end_of_sse_exits_once_stdin_is_sent() -> None:
    """An sse+http listener only sends: once stdin is sent, cat ends the stream and exits,
    not after --wait (60 s here; it waited --wait since the server side's recv() waits for
    the stream's end, 87f5232)."""
    s_out, c_out = _cat_pair(
        "sse+http://127.0.0.1:0/cat", '{"n": 1}\n{"n": 2}\n', "", "--codec", "json", "--wait", "60"
    )
    assert s_out == ""
    assert [json.loads(x) for x in c_out.splitlines()] == [{"n": 1}, {"n": 2}]
