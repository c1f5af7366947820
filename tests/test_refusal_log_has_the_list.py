"""A client refused by ``allow_uids`` is told that its uid is not allowed, not who is; the
server's log still names the list and the fix. unix did so (f2348a8); shm and ws+unix share
its check, so their refused clients got the short text too, but their own log lines lost the
list (helper-109's note).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import ipcwire
from ipcwire.errors import IpcwireError


@pytest.mark.parametrize("scheme", ["shm", "ws+unix", "unix"])
def test_the_log_names_the_list_the_client_is_not_told_it(
    scheme: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    other = os.getuid() + 4242
    url = f"{scheme}://{tmp_path}/r.sock"
    with ipcwire.listen(url, allow_uids=[other]) as lst:
        with pytest.raises(IpcwireError) as err:
            ipcwire.connect(lst.url, timeout=5)
        assert f"[{other}]" not in str(err.value), err.value
        assert f"uid {os.getuid()}" in str(err.value), err.value
    assert f"allow_uids [{other}]" in caplog.text, caplog.text
