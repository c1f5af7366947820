"""A client that an http+unix:// listener's socket mode keeps out is told why and what to do.

Before, uid nobody connecting to a root server's 0600 socket got only "permission denied
while connecting to http+unix:///... (Permission denied)"; unix:// said the socket's mode,
owner and the caller's uid, and the fix. http+unix now says the same (unix's words: its
``explain_connect_error``), blocking and asyncio.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests._proc import NOBODY, run_python

import ipcwire

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as nobody")


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_eacces_names_mode_owner_and_fix(sock_dir: Path, api: str) -> None:
    os.chmod(sock_dir, 0o755)
    url = f"http+unix://{sock_dir}/private.sock"
    connect = (
        f"ipcwire.connect({url!r}, timeout=5)"
        if api == "blocking"
        else f"asyncio.run(aio.connect({url!r}, timeout=5))"
    )
    with ipcwire.listen(url):
        out = run_python(
            f"""
            import asyncio, os, importlib.readers, ipcwire, ipcwire.http.blocking, ipcwire.http.aio
            from ipcwire import aio
            os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})  # (imports done)
            try:
                {connect}
            except ipcwire.PermissionDenied as exc:
                print("PermissionDenied:", exc)
            """
        )
    assert out.startswith("PermissionDenied:"), out
    assert url in out
    assert "mode 0600 owned by uid 0" in out, out
    assert f"you are uid {NOBODY}" in out
    assert "mode=0o660" in out and "run as the owner" in out
