"""A tcp:// host name that does not resolve: a name that does not exist is InvalidURL naming
the host and the fix; a temporary failure of the resolver (EAI_AGAIN: SERVFAIL, DNS
unreachable) is ChannelBroken saying so, and reconnect= retries it until the name resolves.

Before, both were "ChannelBroken: ... broke while connecting to it: Name or service not
known" (or "Temporary failure in name resolution"), with no fix, and reconnect= gave up at the
first temporary failure. Real resolution, deterministic: the client runs in network and mount
namespaces of its own (util-linux ``unshare``), whose /etc/resolv.conf names a small DNS server
on that namespace's loopback, which answers NXDOMAIN for ``nosuch.test``, SERVFAIL for
``down.test``, and for ``flaky.test`` SERVFAIL first, then 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

CLIENT = r"""
import asyncio, json, socket, struct, sys, threading
import ipcwire
from ipcwire import aio

flaky = {"fail": 2, "failed": 0}  # flaky.test: SERVFAIL to this many queries first


def serve_dns(sock):
    while True:
        query, peer = sock.recvfrom(512)
        qid, = struct.unpack("!H", query[:2])
        end = 12
        labels = []
        while query[end]:
            labels.append(query[end + 1:end + 1 + query[end]].decode())
            end += 1 + query[end]
        question = query[12:end + 5]
        qtype, = struct.unpack("!H", query[end + 1:end + 3])
        name = ".".join(labels)
        answers = b""
        if name == "flaky.test" and flaky["fail"] > 0:
            flaky["fail"] -= 1
            flaky["failed"] += 1
            rcode = 2  # SERVFAIL
        elif name == "down.test":
            rcode = 2
        elif name == "flaky.test":
            rcode = 0
            if qtype == 1:  # A: 127.0.0.1 (AAAA: no data)
                answers = struct.pack("!HHHIH4s", 0xC00C, 1, 1, 5, 4, bytes([127, 0, 0, 1]))
        else:
            rcode = 3  # NXDOMAIN
        header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
        sock.sendto(header + question + answers, peer)


dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("127.0.0.1", 53))
threading.Thread(target=serve_dns, args=(dns,), daemon=True).start()

out = {}
server = ipcwire.listen("tcp://127.0.0.1:0")
port = server.url.rsplit(":", 1)[1]


def attempt(key, url, **kw):
    try:
        ipcwire.connect(url, timeout=5, **kw).close()
        out[key] = "ok"
    except ipcwire.IpcwireError as e:
        out[key] = f"{type(e).__name__}: {e}"


async def attempt_aio(key, url, **kw):
    try:
        await (await aio.connect(url, timeout=5, **kw)).aclose()
        out[key] = "ok"
    except ipcwire.IpcwireError as e:
        out[key] = f"{type(e).__name__}: {e}"


attempt("nosuch", f"tcp://nosuch.test:{port}")
attempt("down", f"tcp://down.test:{port}")
attempt("nosuch_reconnect", f"tcp://nosuch.test:{port}", reconnect=5)
threading.Thread(target=lambda: [server.accept(timeout=10) for _ in range(2)]).start()
attempt("flaky_reconnect", f"tcp://flaky.test:{port}", reconnect=5)
out["flaky_failed"] = flaky["failed"]
flaky.update(fail=2, failed=0)
asyncio.run(attempt_aio("aio_nosuch", f"tcp://nosuch.test:{port}"))
asyncio.run(attempt_aio("aio_down", f"tcp://down.test:{port}"))
asyncio.run(attempt_aio("aio_flaky_reconnect", f"tcp://flaky.test:{port}", reconnect=5))
out["aio_flaky_failed"] = flaky["failed"]
print(json.dumps(out))
"""


def _run(tmp_path: Path) -> dict[str, object]:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
    script = f'ip link set lo up && mount --bind {resolv} /etc/resolv.conf && exec "$@"'
    out = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c", script, "sh", sys.executable, "-c",
         textwrap.dedent(CLIENT)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_host_name_errors(tmp_path: Path) -> None:
    got = _run(tmp_path)
    said = {k: v for k, v in got.items() if isinstance(v, str)}
    for key in ("nosuch", "aio_nosuch", "nosuch_reconnect"):
        assert said[key].startswith("InvalidURL: cannot connect to tcp://nosuch.test:"), said[key]
        assert "the host 'nosuch.test' does not exist" in said[key], said[key]
        assert "check its spelling, /etc/hosts, or the DNS this machine uses" in said[key]
        assert "kept trying" not in said[key]  # (not retried: it will not appear)
    for key in ("down", "aio_down"):
        assert said[key].startswith("ChannelBroken: cannot connect to tcp://down.test:"), said
        assert "temporary failure in name resolution of 'down.test'" in said[key], said[key]
        assert "pass reconnect=SECONDS to keep trying" in said[key], said[key]
    # reconnect= retried the temporary failures (SERVFAIL twice) until the name resolved
    assert got["flaky_failed"] == 2 and got["flaky_reconnect"] == "ok", got
    assert got["aio_flaky_failed"] == 2 and got["aio_flaky_reconnect"] == "ok", got
