"""An asyncio gRPC listener's own shutdown ends its clients' channels cleanly.

Closing the listener (``aclose()``, as graceful_shutdown does) or cancelling its ``serve()``
task closes each channel that serve() handles, and then cancels the handler: its
``async with`` saw the CancelledError and told the client the channel ended after an error
('ChannelBroken ... (CancelledError raised while the channel was open)'), where ws, tcp and
http clients get EndOfChannel. A real server process; the client waits in recv().
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import ipcwire
from ipcwire.errors import EndOfChannel

SERVER = """
import asyncio, sys
from ipcwire import aio

async def echo(ch):
    async for m in ch:
        await ch.send(m)

async def main():
    listener = await aio.listen("grpc://127.0.0.1:0", codec="json")
    print(listener.url, flush=True)
    task = asyncio.create_task(listener.serve(echo))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if sys.argv[1] == "aclose":
        await listener.aclose()
    else:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await listener.aclose()

asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["aclose", "cancel_serve"])
def test_listener_shutdown_is_a_clean_end(how: str) -> None:
    srv = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVER), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert srv.stdin is not None and srv.stdout is not None
    try:
        url = srv.stdout.readline().strip()
        assert url, srv.communicate(timeout=10)
        with ipcwire.connect(url, codec="json", timeout=10) as ch:
            assert ch.request({"n": 1}, timeout=10) == {"n": 1}
            srv.stdin.write("go\n")
            srv.stdin.flush()
            with pytest.raises(EndOfChannel):
                ch.recv(timeout=10)
        _, err = srv.communicate(timeout=10)
        assert srv.returncode == 0, err
        assert "Traceback" not in err, err
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
