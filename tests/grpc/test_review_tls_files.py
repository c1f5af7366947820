"""gRPC review (rev-grpc): TLS files that cannot be used are the caller's mistake, said as
such, and never abort the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A client given half a certificate pair, in a child: grpc's core checks it with an assertion
# that aborts the whole process (SIGABRT), so it cannot be tried in the test's own process.
HALF_PAIR = """
import asyncio, sys, ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError
driver, unary, cert, which = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
kw = {which: cert, "cafile": cert, "unary": unary, "timeout": 5}
url = "grpcs://127.0.0.1:9"  # nothing listens there: the files are refused before any call
try:
    if driver == "blocking":
        with ipcwire.connect(url, **kw) as ch:
            ch.request(b"x", timeout=5)
    else:
        async def main():
            async with await aio.connect(url, **kw) as ch:
                await ch.request(b"x", timeout=5)
        asyncio.run(main())
except ConfigurationError as exc:
    print("ConfigurationError", exc.endpoint, exc, flush=True)
except Exception as exc:
    print(type(exc).__name__, exc, flush=True)
"""


@pytest.mark.parametrize("which", ["certfile", "keyfile"])
@pytest.mark.parametrize("unary", [False, True])
@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_a_client_with_half_a_certificate_pair_is_told_not_killed(
    tls_files: tuple[Path, Path], driver: str, unary: bool, which: str
) -> None:
    """connect(certfile=) without keyfile= (or the other way round) made grpc's core abort
    the process ("Check failed: private_key != nullptr", SIGABRT) at the first connection
    attempt, whatever the caller would have done with an exception."""
    cert, key = tls_files
    path = cert if which == "certfile" else key
    done = subprocess.run(
        [sys.executable, "-c", HALF_PAIR, driver, "1" if unary else "0", str(path), which],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ConfigurationError grpcs://127.0.0.1:9 "), done.stdout
    assert "certfile= and keyfile=" in done.stdout
