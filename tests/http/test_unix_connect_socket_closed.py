"""A blocking http+unix connect that fails closes its socket at once.

httpcore's blocking backend leaves the socket open when its connect fails: a refused
``ipcwire.connect`` (and a close()'s DELETE to a server gone) left an "unclosed socket" for
the garbage collector, a ResourceWarning and a descriptor held until then (found by helper-90
running the http tests under -W error).
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import pytest

import ipcwire


def test_a_refused_connect_leaves_no_socket_open(tmp_path: Path) -> None:
    url = f"http+unix://{tmp_path}/none.sock"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ipcwire.ConnectionRefused):
            ipcwire.connect(url, timeout=5)
        gc.collect()
    unclosed = [w for w in caught if "unclosed" in str(w.message) and "family=1" in str(w.message)]
    assert not unclosed, [str(w.message) for w in unclosed]
