"""tcp://127.0.0.1 from inside a network namespace of its own (a container, a sandbox):
its loopback is not the host's, and the errors (and doctor) say so. Real namespaces, made
with util-linux ``unshare``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest

CLIENT = """
import asyncio, json, sys
import ipcwire, ipcwire.tcp.blocking, ipcwire.tcp.aio
from ipcwire import aio
from ipcwire.doctor import diagnose
url = sys.argv[1]
out = []
try:
    ipcwire.connect(url, timeout=5)
except ipcwire.IpcwireError as e:
    out.append(f"{type(e).__name__}: {e}")
async def main():
    try:
        await aio.connect(url, timeout=5)
    except ipcwire.IpcwireError as e:
        out.append(f"{type(e).__name__}: {e}")
asyncio.run(main())
out.append([[f.check, f.summary, f.fix or ""] for f in diagnose(url).findings])
print(json.dumps(out))
"""


def run_in_netns(url: str, lo_up: bool) -> list[object]:
    up = "ip link set lo up && " if lo_up else ""
    out = subprocess.run(
        ["unshare", "--net", "sh", "-c", f'{up}exec "$@"', "sh", sys.executable, "-c",
         textwrap.dedent(CLIENT), url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result: list[object] = json.loads(out.stdout)
    return result


@pytest.fixture
def host_server() -> object:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_loopback_refused_in_another_network_namespace_says_it_is_its_own(
    host_server: str,
) -> None:
    # It said "nothing is listening at tcp://127.0.0.1:PORT: start the server first" while
    # the server listened on the host's loopback.
    blocking, asyncio_, findings = run_in_netns(host_server, lo_up=True)
    for error in (blocking, asyncio_):
        assert isinstance(error, str) and error.startswith("ConnectionRefused: "), error
        assert "own network namespace" in error
        assert "127.0.0.1 here is this namespace's own loopback" in error
        assert "veth" in error
    assert isinstance(findings, list)
    [hint] = [f for f in findings if f[0] == "tcp.other_namespace"]
    assert "this namespace's own loopback" in hint[1] and "veth" in hint[2]


def test_loopback_down_in_a_fresh_network_namespace_says_so(host_server: str) -> None:
    # It said "broke while connecting to it: the network is unreachable".
    blocking, asyncio_, findings = run_in_netns(host_server, lo_up=False)
    for error in (blocking, asyncio_):
        assert isinstance(error, str)
        assert "loopback interface of this network namespace is down" in error
        assert "ip link set lo up" in error
    assert isinstance(findings, list)
    [hint] = [f for f in findings if f[0] == "tcp.other_namespace"]
    assert "ip link set lo up" in hint[1]
