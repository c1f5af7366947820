"""Connecting to a host that cannot be reached, in a network namespace of the test's own
(util-linux ``unshare``, gone with its process): an unreachable host (EHOSTUNREACH, from an
"unreachable" route; ARP going unanswered gives the same) is retried under reconnect= and
says what to check; a host that does not answer at all (packets dropped: a veth peer that
discards them) times out with words that say what timeout= and reconnect= each bound.
tcp://, ws://, grpc:// and http://, blocking and asyncio."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SETUP = """
ip link set lo up
ip route add unreachable 10.78.0.1/32
ip link add v0 type veth peer name v1
ip link set v0 up && ip link set v1 up
ip addr add 10.79.0.2/24 dev v0
ip neigh replace 10.79.0.1 lladdr 02:00:00:00:00:01 dev v0 nud permanent
"""

CLIENT = """
import asyncio, json, logging, subprocess, sys, threading, time, warnings
import ipcwire
from ipcwire import aio
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)
scheme, path = sys.argv[1], sys.argv[2]
lst = ipcwire.listen(f"{scheme}://0.0.0.0:0{path}")
port = lst.url.rsplit(":", 1)[1].split("/")[0]
UNREACHABLE = f"{scheme}://10.78.0.1:{port}{path}"
SILENT = f"{scheme}://10.79.0.1:{port}{path}"

def serve():
    while True:
        try:
            ch = lst.accept(timeout=10)
        except ipcwire.ChannelClosed:
            return
        except ipcwire.IpcwireError:
            continue
        try:  # until the client closes (closing first races the server's welcome)
            ch.recv(timeout=10)
        except ipcwire.ChannelClosed:
            return
        except ipcwire.IpcwireError:
            pass
        finally:
            ch.close()
threading.Thread(target=serve, daemon=True).start()

def route(op):  # the host becomes reachable (this namespace's own address), or not again
    subprocess.run(["ip", "addr", op, "10.78.0.1/32", "dev", "lo"], check=True)

def attempt(api, url, heal=None, **kw):
    timer = threading.Timer(heal, route, ("add",)) if heal else None
    t0 = time.monotonic()
    if timer:
        timer.start()
    try:
        if api == "blocking":
            ipcwire.connect(url, **kw).close()
        else:
            async def main():
                ch = await aio.connect(url, **kw)
                await ch.aclose()
            asyncio.run(main())
        out = ["connected", ""]
    except ipcwire.IpcwireError as e:
        out = [type(e).__name__, str(e)]
    finally:
        if timer:
            timer.join()
            route("del")
    return out + [round(time.monotonic() - t0, 2)]

results = {}
for api in ("blocking", "asyncio"):
    results[api] = {
        "no_reconnect": attempt(api, UNREACHABLE, timeout=2),
        "silent": attempt(api, SILENT, timeout=0.3, reconnect=2),
    }
    if sys.argv[3] == "retries":
        results[api]["ran_out"] = attempt(api, UNREACHABLE, timeout=2, reconnect=0.3)
        results[api]["healed"] = attempt(api, UNREACHABLE, heal=0.3, timeout=2, reconnect=3)
lst.close()
print(json.dumps(results))
"""


Outcome = tuple[str, str, float]  # error type (or 'connected'), its message, seconds taken


def run_in_netns(scheme: str, path: str, retries: bool = True) -> dict[str, dict[str, Outcome]]:
    setup = " && ".join(line for line in SETUP.strip().splitlines())
    out = subprocess.run(
        ["unshare", "--net", "sh", "-c", f'{setup} && exec "$@"', "sh", sys.executable, "-c",
         textwrap.dedent(CLIENT), scheme, path, "retries" if retries else "words"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    raw = json.loads(out.stdout.splitlines()[-1])
    return {
        api: {case: (str(k), str(t), float(s)) for case, (k, t, s) in cases.items()}
        for api, cases in raw.items()
    }


@pytest.mark.parametrize(
    ("scheme", "path"), [("tcp", ""), ("ws", "/app"), ("grpc", ""), ("http", "/api")]
)
def test_unreachable_host_is_retried_under_reconnect_and_a_silent_one_names_timeout(
    scheme: str, path: str
) -> None:
    results = run_in_netns(scheme, path)
    for api, r in results.items():
        kind, text, took = r["no_reconnect"]
        # Before: "... broke while connecting to it: the host is unreachable" (tcp, ws), and
        # grpc "ConnectionRefused: nothing is listening at ...: start the server first"
        assert kind == "ChannelBroken", (api, r)
        assert "the host is unreachable" in text and "check the address and the route" in text
        assert "pass reconnect=SECONDS" in text
        assert took < 1.9, (api, r)  # (not the 2 s it would wait or retry)

        kind, text, took = r["ran_out"]
        # Before: raised at once, not retried (grpc: retried, then "nothing is listening")
        assert kind == "ChannelBroken", (api, r)
        assert "still after trying for 0.3 s (reconnect=)" in text, (api, text)
        assert took >= 0.3, (api, r)

        # a route that comes back within reconnect= is a connection
        assert r["healed"][0] == "connected", (api, r)

        kind, text, took = r["silent"]
        assert kind == "Timeout", (api, r)
        assert "timeout=, the limit of each attempt" in text, (api, text)
        assert "retries attempts that are refused or find no route" in text, (api, text)
        assert "raise timeout= too" in text
        assert took < 1.9, (api, r)  # (not the 2 s it would wait or retry)
