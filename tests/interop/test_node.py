"""Interop with a client and a server that no ipcwire code wrote: Node.js, built-in `net`."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ipcwire
from ipcwire import aio

HERE = Path(__file__).parent
NODE = shutil.which("node") or shutil.which("nodejs")  # ./dev test installs nodejs


def _add(msg: Any) -> Any:
    return {"sum": msg["a"] + msg["b"], "text": msg["text"]}


def _node(*args: str) -> list[Any]:
    assert NODE is not None, "Node.js is missing: run the tests with ./dev test"
    out = subprocess.run(
        [NODE, str(HERE / "ndjson_client.js"), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    result: list[Any] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("token", [None, "node-secret"])
def test_node_client_against_blocking_server(sock_dir: Path, token: str | None) -> None:
    path = sock_dir / "node.sock"
    with ipcwire.listen(f"unix://{path}", framing="ndjson", token=token) as lst:
        srv = threading.Thread(target=lst.serve, args=(lambda ch: [ch.send(_add(m)) for m in ch],))
        srv.start()
        replies = _node(str(path), *([token] if token else []))
        lst.close()
        srv.join(10)
    assert replies == [{"sum": i + 10, "text": "é\n中"} for i in range(3)]


def test_node_client_with_a_wrong_token_is_refused(sock_dir: Path) -> None:
    path = sock_dir / "guarded.sock"
    with ipcwire.listen(f"unix://{path}", framing="ndjson", token="right") as lst:
        srv = threading.Thread(target=lst.serve, args=(lambda ch: ch.send(ch.recv()),))
        srv.start()
        replies = _node(str(path), "wrong")
        with ipcwire.connect(f"unix://{path}", framing="ndjson", token="right") as ch:
            assert ch.request({"still": "serving"}, timeout=10) == {"still": "serving"}
        lst.close()
        srv.join(10)
    # The plain client gets one JSON line saying why, then the server closes the connection.
    assert len(replies) == 1
    assert replies[0]["code"] == "auth"
    assert "wrong token" in replies[0]["error"]


def test_node_client_against_asyncio_server(unix_url: Callable[[], str], sock_dir: Path) -> None:
    path = sock_dir / "anode.sock"

    async def main() -> list[Any]:
        async with await aio.listen(f"unix://{path}", framing="ndjson") as lst:

            async def handler(ch: aio.AioChannel) -> None:
                async for m in ch:
                    await ch.send(_add(m))

            srv = asyncio.ensure_future(lst.serve(handler))
            replies = await asyncio.to_thread(_node, str(path))
            lst.close()
            await asyncio.wait_for(srv, 10)
            return replies

    assert asyncio.run(main()) == [{"sum": i + 10, "text": "é\n中"} for i in range(3)]


def test_ipcwire_client_against_a_node_server(sock_dir: Path) -> None:
    assert NODE is not None
    path = sock_dir / "nodeserver.sock"
    proc = subprocess.Popen(
        [NODE, str(HERE / "ndjson_server.js"), str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with ipcwire.connect(f"unix://{path}", framing="ndjson") as ch:
            assert ch.request({"hi": [1, 2]}, timeout=10) == {"from": "node", "got": {"hi": [1, 2]}}
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
