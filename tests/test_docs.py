"""The docs stay true: generated tables current, every error and mechanism documented."""

from __future__ import annotations

import re
from pathlib import Path

import ipcwire.errors
from ipcwire._docs import END, START, feature_matrix
from ipcwire.registry import mechanisms

ROOT = Path(__file__).parent.parent


def test_feature_matrix_is_generated_from_the_registry() -> None:
    text = (ROOT / "docs/mechanisms/README.md").read_text()
    block = text[text.index(START) + len(START) : text.index(END)].strip()
    assert block == feature_matrix(), "run: python -m ipcwire._docs"


def test_every_error_is_in_the_reference() -> None:
    text = (ROOT / "docs/errors.md").read_text()
    table = text[text.index("| error |") :]
    for name in ipcwire.errors.__all__:
        if name not in ("IpcwireError", "ProtocolError"):  # the roots, shown in the tree
            assert f"| `{name}` |" in table, f"{name} has no row in docs/errors.md"
        assert re.search(rf"\b{name}\b", text), name


def test_every_mechanism_has_a_page() -> None:
    for spec in mechanisms():
        assert spec.docs, spec.scheme
        assert (ROOT / spec.docs).is_file(), f"{spec.scheme}: {spec.docs} is missing"


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("```")[1]
    assert "./dev ipcwire bench --quick" in head
    assert "./dev test" in head
    assert "./dev test" in (ROOT / ".ci/run").read_text()


def test_the_readmes_first_program_runs_as_written(tmp_path: Path) -> None:
    """server.py, client.py and the asyncio client of the README, run as two processes (the
    socket path moved into tmp_path); Ctrl-C stops the server and removes its socket file."""
    import signal
    import subprocess
    import sys

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    sock = tmp_path / "app.sock"
    server, client, aclient = (b.replace("/tmp/app.sock", str(sock)) for b in blocks[:3])
    assert "server.serve(" in server and "reconnect=" in client and "aio.connect" in aclient
    proc = subprocess.Popen([sys.executable, "-c", server], stderr=subprocess.PIPE, text=True)
    try:
        for code in (client, aclient):  # the first waits for the server (reconnect=5)
            out = subprocess.run(
                [sys.executable, "-c", code],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.stdout.strip() == "{'ok': True, 'echo': {'op': 'ping'}}", out.stderr
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(20)
        assert proc.stderr is not None
        proc.stderr.close()
    assert not sock.exists()
