"""docs/protocol.md section 5: a goodbye ends the channel in both directions. A raw client
says hello (offering goodbyes) and sends a clean goodbye; the server's recv() ends with
EndOfChannel and its send() then raises ChannelBroken, on both APIs. What each API writes
after it is the page's words too: the asyncio side its own goodbye, the blocking side none."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, EndOfChannel

GOODBYE = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def _raw_client(path: str) -> bytes:
    """Hello, a goodbye, then everything the server writes until it closes."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        hello = json.dumps({"ipcwire": 1, "codec": "json", "goodbye": 1}).encode()
        s.sendall(len(hello).to_bytes(4, "big") + hello)
        size = int.from_bytes(s.recv(4, socket.MSG_WAITALL), "big")
        assert json.loads(s.recv(size, socket.MSG_WAITALL))["goodbye"] == 1
        s.sendall(GOODBYE)
        out = b""
        while chunk := s.recv(100):
            out += chunk
        return out


def test_blocking_server(tmp_path: Path) -> None:
    path = str(tmp_path / "b.sock")
    seen: list[str] = []

    def handler(ch: ipcwire.Channel) -> None:
        try:
            ch.recv(timeout=10)
        except EndOfChannel:
            seen.append("end")
        try:
            ch.send("late")
        except ChannelBroken as exc:
            seen.append(str(exc))

    with ipcwire.listen(f"unix://{path}", codec="json") as lis:
        t = threading.Thread(target=lis.serve, args=(handler,), daemon=True)
        t.start()
        after = _raw_client(path)
    t.join(5)
    assert seen[0] == "end" and "reads nothing more" in seen[1], seen
    assert after == b""  # the blocking side closes without a goodbye of its own


def test_asyncio_server(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sock")
    seen: list[str] = []

    async def handler(ch: aio.AioChannel) -> None:
        try:
            await ch.recv(timeout=10)
        except EndOfChannel:
            seen.append("end")
        try:
            await ch.send("late")
        except ChannelBroken as exc:
            seen.append(str(exc))

    async def main() -> bytes:
        async with await aio.listen(f"unix://{path}", codec="json") as lis:
            task = asyncio.ensure_future(lis.serve(handler))
            try:
                return await asyncio.to_thread(_raw_client, path)
            finally:
                task.cancel()

    after = asyncio.run(main())
    assert seen[0] == "end" and "reads nothing more" in seen[1], seen
    assert after == GOODBYE  # the asyncio side answers with its own goodbye as it closes
